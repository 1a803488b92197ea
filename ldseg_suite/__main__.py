"""``python -m ldseg_suite``: the same command line as ``run.py`` (and the ``ldseg-suite`` console script)."""
import sys

from ldseg_suite.cli import main

if __name__ == "__main__":
    sys.exit(main())
