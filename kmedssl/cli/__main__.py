"""``python -m kmedssl.cli`` (and ``torchrun ... -m kmedssl.cli``): the ``kmedssl`` command."""

from kmedssl.cli import main

if __name__ == "__main__":
    main()
