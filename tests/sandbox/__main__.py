"""``python -m tests.sandbox``: run the sandbox server (flags: ``--help``)."""

from __future__ import annotations

import sys

from tests.sandbox.server import main

sys.exit(main())
