"""`python -m vitrine.cli` is the `vitrine` command."""

from vitrine.cli.app import main

main()
