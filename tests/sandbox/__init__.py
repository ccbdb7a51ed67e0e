"""The sandbox site: imagecrawl's own deterministic test/demo website on loopback.

* :mod:`tests.sandbox.catalog` - the pure, deterministic catalog and image renderer;
* :mod:`tests.sandbox.markup` - the HTML of the gallery pages (shared with the benchmark site);
* :mod:`tests.sandbox.sites` - the fake sites, one module each (civitai, lexica, gallery, ...);
* :mod:`tests.sandbox.behaviours` - pluggable middlewares (rate limits, hostile responses ...);
* :mod:`tests.sandbox.server` - the aiohttp app and ``main`` (``imagecrawl sandbox``);
* :mod:`tests.sandbox.testing` - start/stop the server in a subprocess.

See docs/sandbox.md.
"""

from __future__ import annotations
