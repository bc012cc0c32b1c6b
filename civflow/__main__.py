"""`python -m civflow`."""

from civflow.cli import main

main()
