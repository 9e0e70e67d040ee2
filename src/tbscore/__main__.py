"""``python -m tbscore``."""

import sys

from tbscore.cli import main

sys.exit(main())
