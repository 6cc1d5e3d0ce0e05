"""``python -m helpers.training``: train the grid from the command line (see :mod:`helpers.training.grid`)."""
import sys

from helpers.training.grid import main

sys.exit(main())
