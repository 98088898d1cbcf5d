"""`python -m vitrine` is the `vitrine` command."""

from vitrine.cli.app import main

main()
