"""`python -m vaebench` is the `vaebench` command."""

from vaebench.cli import main

main()
