"""`python -m cnncodes VERB ...` is the `cnncodes` command."""
import sys

from .cli import main

sys.exit(main())
