"""Allow ``python -m streams`` as another name for the ``oddwatch`` command."""

from streams.cli import main

main()
