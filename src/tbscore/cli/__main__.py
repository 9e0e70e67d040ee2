"""``python -m tbscore.cli``."""

import sys

from tbscore.cli import main

sys.exit(main())
