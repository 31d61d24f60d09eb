"""``python -m mlaas4hep.cli``: the same as the ``mlaas4hep`` command."""

import sys

from mlaas4hep.cli import main

sys.exit(main())
