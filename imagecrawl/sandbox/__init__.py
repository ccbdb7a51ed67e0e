"""The sandbox site: imagecrawl's own deterministic test/demo website on loopback.

* :mod:`imagecrawl.sandbox.catalog` - the pure, deterministic catalog and image renderer;
* :mod:`imagecrawl.sandbox.server` - the aiohttp server (``imagecrawl sandbox``);
* :mod:`imagecrawl.sandbox.behaviours` - pluggable middlewares (rate limits, hostile responses ...);
* :mod:`imagecrawl.sandbox.testing` - start/stop the server in a subprocess.

See docs/sandbox.md.
"""

from __future__ import annotations
