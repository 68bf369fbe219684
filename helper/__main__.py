"""`python -m helper` is the `spiffe-helper` command."""

import sys

from helper.cli import main

sys.exit(main())
