"""`python -m cli` is the `vitrine` command."""

from cli.app import main

main()
