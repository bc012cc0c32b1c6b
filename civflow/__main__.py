"""`python -m civflow`."""

from civflow.cli import entry

entry()
