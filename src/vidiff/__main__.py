"""`python -m vidiff` (and `torchrun -m vidiff`) run the same CLI as the `vidiff` script."""

from vidiff.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
