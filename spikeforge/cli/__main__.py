"""``python -m spikeforge.cli``: the same as the ``spikeforge`` command."""

import sys

from spikeforge.cli import main

sys.exit(main())
