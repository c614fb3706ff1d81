"""`python -m deceptwatch` runs the command-line interface."""

from deceptwatch.cli import main

main()
