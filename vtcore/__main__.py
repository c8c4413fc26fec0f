"""``python -m vtcore`` is the ``vt`` command."""

from vtcore.cli import main

main()
