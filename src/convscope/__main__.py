"""``python -m convscope``: the command line, for launchers that run a module (``torchrun -m``)."""

import sys

from .cli import main

sys.exit(main())
