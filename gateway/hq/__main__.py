"""``python -m gateway.hq COMMAND ...``: the ``moments hq`` commands on their own."""

import sys

from gateway.hq.cli import main

sys.exit(main())
