"""`python -m firmware.cli ...` (what the tests and the image's unit run)."""

import sys

from firmware.cli import main

sys.exit(main())
