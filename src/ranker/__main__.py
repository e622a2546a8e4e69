"""``python -m ranker …`` (and ``torchrun -m ranker …``): the same as the ``ranker`` command."""

import sys

from ranker.cli import main

sys.exit(main())
