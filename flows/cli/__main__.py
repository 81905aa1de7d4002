"""`python -m flows.cli ...` = `cropi ...`."""

from flows.cli import main

main()
