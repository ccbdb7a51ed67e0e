"""``python -m imagecrawl.sandbox`` = ``python -m imagecrawl.sandbox.server``."""

from __future__ import annotations

import sys

from imagecrawl.sandbox.server import main

sys.exit(main())
