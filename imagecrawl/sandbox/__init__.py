"""The sandbox site: imagecrawl's own deterministic test/demo website on loopback.

* :mod:`imagecrawl.sandbox.catalog` - the pure, deterministic catalog and image renderer;
* :mod:`imagecrawl.sandbox.markup` - the HTML of the gallery pages (shared with the benchmark site);
* :mod:`imagecrawl.sandbox.sites` - the fake sites, one module each (civitai, lexica, gallery, ...);
* :mod:`imagecrawl.sandbox.behaviours` - pluggable middlewares (rate limits, hostile responses ...);
* :mod:`imagecrawl.sandbox.server` - the aiohttp app and ``main`` (``imagecrawl sandbox``);
* :mod:`imagecrawl.sandbox.testing` - start/stop the server in a subprocess.

See docs/sandbox.md.
"""

from __future__ import annotations
