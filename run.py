#!/usr/bin/env python
"""The one entry point: python run.py --cfg cfg/<name>.ini [--mode MODE] [--out DIR] [--set S.K=V ...]"""
import sys

from ldseg_suite.cli import main

if __name__ == "__main__":
    sys.exit(main())
