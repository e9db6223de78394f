"""``python -m fastsmtp`` is the ``fastsmtp`` command."""

import sys

from .cli import main

sys.exit(main())
