"""The sandbox's command-line flags (``imagecrawl sandbox --help``).

:func:`parse_args` reads them, :func:`sandbox_config` turns them into a
:class:`~tests.sandbox.config.SandboxConfig`; :func:`tests.sandbox.server.main` runs the server.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
from collections.abc import Sequence
from pathlib import Path

from tests.sandbox.catalog import check_overrides
from tests.sandbox.config import MisbehaveConfig, SandboxConfig
from tests.sandbox.misbehave import BAN_MODES


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="imagecrawl sandbox", description="Run the deterministic sandbox site.")
    p.add_argument("--host", default="127.0.0.1", help="bind address (loopback only by default)")
    p.add_argument("--port", type=int, default=8765, help="port; 0 picks a free one")
    p.add_argument("--items", type=int, default=200, help="entries per source (default 200)")
    p.add_argument("--seed", type=int, default=0, help="catalog seed (default 0)")
    p.add_argument(
        "--hidden",
        type=int,
        default=0,
        help="of the --items, the N newest per source are served only after POST /_sandbox/reveal?n=K",
    )
    p.add_argument("--page-size", type=int, default=24, help="gallery cards per listing page (default 24)")
    p.add_argument("--crawl-delay", type=float, default=None, help="add a Crawl-delay line to robots.txt")
    p.add_argument(
        "--content-signal",
        default=None,
        metavar="VALUE",
        help="add a site-wide Content-Signal: VALUE line to robots.txt",
    )
    p.add_argument(
        "--rate-limit",
        type=float,
        default=None,
        metavar="RPS",
        help="token bucket per client IP: answer 429 past RPS requests/s (robots.txt exempt)",
    )
    p.add_argument("--burst", type=int, default=None, help="token bucket capacity (default ceil(RPS))")
    p.add_argument(
        "--no-retry-after",
        dest="retry_after",
        action="store_false",
        help="send 429 responses without a Retry-After header",
    )
    p.add_argument("--hostile", action="store_true", help="serve the hostile behaviours under /hostile/")
    p.add_argument("--log", type=Path, default=None, help="append one JSON line per request to FILE")
    p.add_argument(
        "--overrides",
        type=Path,
        default=None,
        metavar="FILE",
        help="a JSON file {source: {index: {field: value}}} replacing fields of catalog entries (any value: "
        "lone surrogates, huge numbers), served as they are",
    )
    p.add_argument("--allow-non-loopback", action="store_true", help="allow binding a non-loopback address")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging to stderr")
    _add_misbehave_arguments(p)
    return p


def _add_misbehave_arguments(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("misbehaviour (per site = Host name)")
    g.add_argument("--capacity", type=float, default=None, help="requests/s per site before 429 (token bucket)")
    g.add_argument(
        "--capacity-burst", type=float, default=None, help="bucket size for --capacity (default: max(1, capacity))"
    )
    g.add_argument(
        "--retry-after",
        dest="capacity_retry_after",  # not --no-retry-after's dest (the per-IP limit's switch)
        type=float,
        default=None,
        help="send Retry-After: S with each 429",
    )
    g.add_argument("--retry-after-date", action="store_true", help="send Retry-After as an HTTP date")
    g.add_argument(
        "--retry-after-share",
        type=float,
        default=1.0,
        metavar="F",
        help="only this share of the 429s carry Retry-After (and open a window), spread evenly: 0.5 = every "
        "other one, the first included (default 1)",
    )
    g.add_argument("--latency", type=float, default=0.0, help="base response latency, seconds")
    g.add_argument("--latency-per-queued", type=float, default=0.0, help="extra latency per request in progress")
    g.add_argument("--ban-mode", choices=BAN_MODES, default=None, help="what a banned client gets")
    g.add_argument("--ban-rate", type=float, default=None, help="ban when more than N requests arrive within 1 s")
    g.add_argument("--ban-after", type=int, default=None, help="ban after N requests")
    g.add_argument("--ban-seconds", type=float, default=30.0, help="ban duration (default 30)")
    g.add_argument("--ban-extend", action="store_true", help="each request during a ban restarts it")
    g.add_argument(
        "--status-paths", action="store_true", help="answer /status/<code>[?retry_after=S], /challenge, /empty"
    )


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """The parsed flags; exits 2 (with usage) on bad values."""
    p = build_parser()
    args = p.parse_args(argv)
    if args.items < 0 or args.page_size < 1:
        p.error("--items must be >= 0 and --page-size >= 1")
    if not 0 <= args.hidden <= args.items:
        p.error("--hidden must be between 0 and --items")
    if args.rate_limit is not None and args.rate_limit <= 0:
        p.error("--rate-limit must be > 0")
    if args.burst is not None and args.burst < 1:
        p.error("--burst must be >= 1")
    if not 0.0 <= args.retry_after_share <= 1.0:
        p.error("--retry-after-share must be between 0 and 1")
    if args.retry_after_share != 1.0 and args.capacity_retry_after is None:
        p.error("--retry-after-share needs --retry-after")
    args.overrides_data = None
    if args.overrides is not None:
        try:
            args.overrides_data = json.loads(args.overrides.read_text(encoding="utf-8"))
            check_overrides(args.overrides_data)
        except (OSError, ValueError) as exc:
            p.error(f"--overrides {args.overrides}: {exc}")
    return args


def misbehave_config(args: argparse.Namespace) -> MisbehaveConfig:
    if args.ban_mode is not None and args.ban_rate is None and args.ban_after is None:
        raise SystemExit("--ban-mode needs --ban-rate or --ban-after")
    return MisbehaveConfig(
        capacity=args.capacity,
        burst=args.capacity_burst,
        retry_after=args.capacity_retry_after,
        retry_after_date=args.retry_after_date,
        retry_after_share=args.retry_after_share,
        latency=args.latency,
        latency_per_queued=args.latency_per_queued,
        ban_mode=args.ban_mode,
        ban_rate=args.ban_rate,
        ban_after=args.ban_after,
        ban_seconds=args.ban_seconds,
        ban_extend=args.ban_extend,
        status_paths=args.status_paths,
    )


def sandbox_config(args: argparse.Namespace) -> SandboxConfig:
    """The server configuration the flags ask for (exits when they contradict each other)."""
    return SandboxConfig(
        items=args.items,
        seed=args.seed,
        hidden=args.hidden,
        page_size=args.page_size,
        crawl_delay=args.crawl_delay,
        content_signal=args.content_signal,
        rate_limit=args.rate_limit,
        burst=args.burst,
        retry_after=args.retry_after,
        hostile=args.hostile,
        misbehave=misbehave_config(args),
        overrides=getattr(args, "overrides_data", None),
    )


def check_host(host: str, allow_non_loopback: bool) -> str | None:
    """Why ``host`` may not be bound to, or ``None`` when it may (loopback, unless allowed)."""
    if host == "localhost":
        return None
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return f"--host must be an IP address (got {host!r})"
    if not ip.is_loopback and not allow_non_loopback:
        return f"refusing to bind to non-loopback address {host} (use --allow-non-loopback to override)"
    return None
