"""``python -m fusionrt.cli``."""

import sys

from . import main

sys.exit(main())
