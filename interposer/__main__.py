"""``python -m interposer``: the same as the ``interposer`` console script."""

from .cli import main

main()
