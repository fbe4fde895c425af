"""``python -m funtask_trio``: the same as the ``funtask-trio`` command."""

import sys

from .cli import main

sys.exit(main())
