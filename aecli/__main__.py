"""`python -m aecli` (and `torchrun -m aecli`) runs the same CLI as the `ae` script."""

from aecli.cli import main

if __name__ == "__main__":
    main()
