"""`python -m deepsloth ...`: the same as the `deepsloth` console script."""
import sys

from .cli.main import main

if __name__ == "__main__":
    sys.exit(main())
