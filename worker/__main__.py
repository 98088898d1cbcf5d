"""`python -m worker` is the `vitrine` command."""

from worker.cli import main

main()
