"""The sandbox HTTP server: the fake sites of :mod:`tests.sandbox.sites` on one aiohttp app.

Run ``python -m tests.sandbox --port 0`` (or ``imagecrawl sandbox``; flags in
:mod:`tests.sandbox.cli`).  Binds to loopback only unless ``--allow-non-loopback`` is given.

Architecture (see docs/sandbox.md): :func:`create_app` builds an aiohttp application from a
:class:`SandboxConfig`.  Routes are plain handlers that read the immutable catalog; cross-cutting
behaviours (rate limiting, latency, bans, hostile responses) are aiohttp middlewares listed by
:func:`tests.sandbox.behaviours.build_middlewares` and the request log is written by an
aiohttp access logger (:mod:`tests.sandbox.requestlog`) *after* each response has been sent,
so it records what really went out.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import sys
from collections.abc import Callable
from typing import IO

from aiohttp import web

from tests.sandbox import cli
from tests.sandbox.behaviours import build_middlewares
from tests.sandbox.catalog import build_catalog
from tests.sandbox.config import CATALOG_KEY, CONFIG_KEY, LOGFILE_KEY, SandboxConfig
from tests.sandbox.requestlog import JsonLinesAccessLogger
from tests.sandbox.sites import (
    aipref,
    browsertraps,
    civitai,
    civitai_models,
    consent,
    gallery,
    growth,
    images,
    jsgallery,
    lexica,
    optout,
    redirects,
    root,
    sitemaps,
)

logger = logging.getLogger(__name__)

#: The route modules, in the order their routes are added (hostile mode is a middleware).
SITES: tuple[Callable[[web.Application], None], ...] = (
    root.add_routes,  # /, /robots.txt, /private/
    civitai.add_routes,  # /api/v1/images
    civitai_models.add_routes,  # /api/v1/models, /api/v1/models/<id>
    lexica.add_routes,  # /api/v1/search, /lexica/prompt/<id>
    gallery.add_routes,  # /gallery/
    images.add_routes,  # /images/<source>/<name>
    jsgallery.add_routes,  # /jsgallery/: items appear only after JavaScript runs
    optout.add_routes,  # /optout/, /.well-known/tdmrep.json
    aipref.add_routes,  # /aipref/: Content-Signal, Content-Usage, embedded data-mining rights
    sitemaps.add_routes,  # /sitemap.xml, /sitemaps/: index, image sitemaps with lastmod, gzip, a bad one
    growth.add_routes,  # POST /_sandbox/reveal: the catalog gains items between runs
    consent.add_routes,  # POST /_sandbox/robots: robots.txt changes between runs
    redirects.add_routes,  # /redirect?to=<loopback URL>
    browsertraps.add_routes,  # /browsertrap/: an iframe and a script navigation
)


async def _server_header(request: web.Request, response: web.StreamResponse) -> None:
    response.headers["Server"] = "imagecrawl-sandbox"


def create_app(config: SandboxConfig, log_file: IO[str] | None = None) -> web.Application:
    app = web.Application(middlewares=build_middlewares(config))
    app.on_response_prepare.append(_server_header)
    app[CATALOG_KEY] = build_catalog(config.items, config.seed, config.overrides)
    app[CATALOG_KEY].hidden = config.hidden
    app[CONFIG_KEY] = config
    app[LOGFILE_KEY] = log_file
    for add_routes in SITES:
        add_routes(app)
    return app


async def serve(config: SandboxConfig, host: str, port: int, log_file: IO[str] | None) -> None:
    """Serve ``config`` on ``host:port`` until SIGTERM or SIGINT; print the "listening on" line first."""
    app = create_app(config, log_file)
    runner = web.AppRunner(
        app,
        access_log_class=JsonLinesAccessLogger,
        access_log=logger,
        handle_signals=False,
    )
    await runner.setup()
    host = "127.0.0.1" if host == "localhost" else host
    site = web.TCPSite(runner, host, port, reuse_address=True, backlog=512)
    await site.start()
    port = runner.addresses[0][1]
    shown = f"[{host}]" if ":" in host else host
    sys.stdout.write(f"imagecrawl sandbox listening on http://{shown}:{port}/\n")
    sys.stdout.flush()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        logger.info("shutting down")
        await runner.cleanup()


def main(argv: list[str] | None = None) -> int:
    args = cli.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    problem = cli.check_host(args.host, args.allow_non_loopback)
    if problem:
        print(f"imagecrawl sandbox: {problem}", file=sys.stderr)
        return 2
    log_file: IO[str] | None = None
    if args.log is not None:
        try:
            log_file = open(args.log, "a", buffering=1, encoding="utf-8")  # noqa: SIM115 - closed below
        except OSError as exc:
            print(f"imagecrawl sandbox: cannot open request log {args.log}: {exc}", file=sys.stderr)
            return 2
    try:
        asyncio.run(serve(cli.sandbox_config(args), args.host, args.port, log_file))
    except OSError as exc:
        print(f"imagecrawl sandbox: cannot listen on {args.host}:{args.port}: {exc}", file=sys.stderr)
        return 1
    finally:
        if log_file is not None:
            log_file.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
