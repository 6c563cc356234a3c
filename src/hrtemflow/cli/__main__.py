"""`python -m hrtemflow.cli ...`, the same as the `hrtemflow` command."""

import sys

from . import main

sys.exit(main())
