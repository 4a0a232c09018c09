"""``python -m nnatlas`` (and ``torchrun -m nnatlas``) runs the command line."""

import sys

from nnatlas.cli import main

sys.exit(main())
