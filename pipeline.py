#!/usr/bin/env python
"""The checkout's launcher: `python pipeline.py VERB ...` is the `cnncodes` command (cnncodes/cli.py)."""
import sys

from cnncodes.cli import main

if __name__ == "__main__":
    sys.exit(main())
