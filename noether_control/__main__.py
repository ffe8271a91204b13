"""``python -m noether_control COMMAND [overrides]`` is the same as ``noether-control``."""

from noether_control.cli import main

if __name__ == "__main__":
    main()
