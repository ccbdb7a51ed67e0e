"""``python -m imagecrawl.sandbox``: run the sandbox server (flags: ``--help``)."""

from __future__ import annotations

import sys

from imagecrawl.sandbox.server import main

sys.exit(main())
