"""``python -m bridge.cli``."""

from bridge.cli import main

main()
