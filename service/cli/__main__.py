"""``python -m service.cli``: the ``clipserve`` command."""

import sys

from service.cli import main

sys.exit(main())
