"""``imagecrawl forget STORE``: remove rows from a store on request, keep tombstones so that no later
crawl brings them back, and log the removal (docs/forget.md).

Exit status 0 when done (also when nothing matched), 2 for a usage error, 3 for store trouble (it cannot
be read or written, or a crawl is writing into it now).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from imagecrawl import failpoints, redact
from imagecrawl.dedupe.sqlite import Ledger, open_ledger
from imagecrawl.errors import ConfigError, StoreError, missing_extra
from imagecrawl.exitcodes import status_of
from imagecrawl.forget import engine, lock
from imagecrawl.forget.selectors import KINDS, Selection, Selector, parse_selector, read_selector_file
from imagecrawl.forget.tombstones import Tombstone
from imagecrawl.state import state_dir_for
from imagecrawl.storage.stores import LocalStore, S3Store, open_store, s3_config_from_settings, s3_problem
from imagecrawl.tuning import tuning

logger = logging.getLogger(__name__)

#: the tombstones of distributed crawls (extra "redis"), used when a Redis URL is set
SHARED_TOMBSTONES = "imagecrawl.distributed.tombstones.SharedTombstones"
#: a forget run's turn against distributed workers on any machine (extra "redis")
DISTRIBUTED_HOLD = "imagecrawl.distributed.forgetlock.hold"


def store_settings(store: str, pairs: Sequence[str]) -> Any:
    """The settings ``scrapy crawl`` would have in this project (its settings module, with its add-ons
    and their defaults beneath), with ``-s NAME=VALUE`` and ``IMAGECRAWL_STORE`` applied: what a forget
    run reads, and what the recheck crawl runs with (the add-ons install the crawl's components and its
    identity when the crawler starts)."""
    from scrapy.settings import Settings

    from imagecrawl import settings as project
    from imagecrawl.addon import default_values

    settings = Settings()
    for name, value in default_values().items():
        settings.set(name, value, priority="addon")
    settings.setmodule(project, priority="project")
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name.strip():
            raise ConfigError(f"-s {pair!r}: expected NAME=VALUE")
        settings.set(name.strip(), value, priority="cmdline")
    settings.set("IMAGECRAWL_STORE", store, priority="cmdline")
    return settings


def open_for_forget(settings: Any) -> tuple[LocalStore | S3Store, Path]:
    """The store and its state folder; :class:`StoreError` for a local store that is not there (a typo
    must not read as "nothing to forget")."""
    url = str(settings.get("IMAGECRAWL_STORE"))
    store = open_store(url, s3_config_from_settings(settings))
    if isinstance(store, LocalStore) and not store.root.is_dir():
        raise StoreError(f"no store at {store.root}: not a folder")
    return store, state_dir_for(url, settings.get("IMAGECRAWL_STATE_DIR"))


def tombstone_publisher(settings: Any) -> Callable[[list[Tombstone]], Any] | None:
    """Shares a forget run's tombstones with running distributed crawls when a Redis URL is set."""
    if not str(settings.get("IMAGECRAWL_REDIS_URL") or settings.get("REDIS_URL") or "").strip():
        return None
    from scrapy.utils.misc import load_object

    # the add-on sets the factory for crawls; a forget run has no add-ons, so the shared one is the fallback
    path = str(settings.get("IMAGECRAWL_TOMBSTONES_FACTORY"))
    if not path:
        path = SHARED_TOMBSTONES
    try:
        shared = load_object(path)
    except ModuleNotFoundError as exc:
        raise missing_extra("IMAGECRAWL_REDIS_URL (or REDIS_URL)", "redis", exc.name or "redis") from None
    return lambda stones: shared.publish_settings(settings, stones)


def distributed_hold(settings: Any) -> contextlib.AbstractContextManager[None]:
    """With a Redis URL: the store held against distributed workers on any machine (they wait, or this
    run refuses while one writes); without one, nothing to hold beyond the state folder's lock."""
    if settings is None or not str(settings.get("IMAGECRAWL_REDIS_URL") or settings.get("REDIS_URL") or "").strip():
        return contextlib.nullcontext()
    from scrapy.utils.misc import load_object

    try:
        hold = load_object(DISTRIBUTED_HOLD)
    except ModuleNotFoundError as exc:
        raise missing_extra("IMAGECRAWL_REDIS_URL (or REDIS_URL)", "redis", exc.name or "redis") from None
    held: contextlib.AbstractContextManager[None] = hold(settings, str(settings.get("IMAGECRAWL_STORE")))
    return held


def author_salt_of(state: Path, settings: Any) -> bytes | None:
    """The store's author salt, read only (a forget run never makes one)."""
    configured = str(settings.get("IMAGECRAWL_AUTHOR_SALT"))
    if configured:
        return configured.encode()
    try:
        return bytes.fromhex((state / "author_salt").read_text().strip())
    except (OSError, ValueError):
        pass
    if str(settings.get("IMAGECRAWL_REDIS_URL") or settings.get("REDIS_URL") or "").strip():
        # distributed crawls keep one salt for all workers in Redis
        from scrapy.utils.misc import load_object

        try:
            salt = load_object(SHARED_TOMBSTONES).author_salt(settings)
        except ModuleNotFoundError as exc:
            raise missing_extra("IMAGECRAWL_REDIS_URL (or REDIS_URL)", "redis", exc.name or "redis") from None
        return salt.encode() if salt else None
    return None


def live_writers(ledger: Ledger) -> list[str]:
    """Runs the dedupe ledger knows as still going (on this host: process alive; elsewhere: fresh
    heartbeat): crawls writing into the store now."""
    return [f"crawl {owner} (host {host}, pid {pid})" for owner, host, pid in ledger.live_owners()]


def commit_leftovers(store: LocalStore | S3Store, state: Path, settings: Any, ledger: Ledger) -> None:
    """Commit what an interrupted crawl left in the outbox (as its next start would: the outbox's own
    recovery), so that its rows are in the store when the selection is made; :class:`StoreError` if the
    store does not take them all."""
    import asyncio

    from imagecrawl.storage.outbox import Outbox

    async def flush() -> list[str]:
        keys = {shard.key for shard in store.list_shards()}
        outbox = Outbox(state / "outbox", store, ledger, max_bytes=tuning(settings).outbox_max_bytes)
        outbox.recover(keys, tuning(settings).row_group_rows)
        return await outbox.close(timeout=tuning(settings).close_commit_timeout_seconds)

    waiting = asyncio.run(flush())
    left = outbox_leftovers(state)
    if waiting or left:
        raise StoreError(
            f"the outbox {state / 'outbox'} holds {len(waiting or left)} shard(s) an interrupted crawl left that "
            f"the store did not take now ({(waiting or left)[0]}, ...): forget again when the store takes them"
        )
    logger.warning("Committed the shards an interrupted crawl left in %s before forgetting", state / "outbox")


def outbox_leftovers(state: Path) -> list[str]:
    outbox = state / "outbox"
    if not outbox.is_dir():
        return []
    return sorted(p.name for p in outbox.iterdir() if p.suffix in (".spool", ".ready"))


#: the command's spelling (issue and docs/forget.md), then the options beyond it
USAGE = (
    "%(prog)s STORE [--site HOST]... [--url-prefix PREFIX]... [--sha256 HASH]... [--like IMAGE_FILE]... "
    "[--from FILE] --reason TEXT [--dry-run] [--account NAME]... [--json] [-s NAME=VALUE]..."
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="imagecrawl forget",
        usage=USAGE,
        description="Remove rows from a store on request, keep tombstones so that no later crawl brings "
        "them back, and log the removal in the store's audit log (docs/forget.md).",
        epilog="Exit status: 0 done, 2 usage error, 3 store trouble (or a crawl is writing into the store).",
    )
    parser.add_argument("store", metavar="STORE", help="a local folder or s3://bucket/prefix, as IMAGECRAWL_STORE")
    parser.add_argument(
        "--site",
        action="append",
        default=[],
        metavar="HOST",
        help="rows whose page or image is on HOST or its subdomains (a host or a registered domain)",
    )
    parser.add_argument(
        "--url-prefix",
        action="append",
        default=[],
        metavar="PREFIX",
        help="rows whose page or image URL starts with PREFIX (with * or ?: a pattern)",
    )
    parser.add_argument("--sha256", action="append", default=[], metavar="HASH", help="rows of this image")
    parser.add_argument(
        "--like",
        action="append",
        default=[],
        metavar="IMAGE_FILE",
        help="rows of this image and its near-duplicates (same pHash distance as dedupe)",
    )
    parser.add_argument(
        "--account",
        action="append",
        default=[],
        metavar="NAME",
        help="rows of this source account (a Civitai username, a gallery author)",
    )
    parser.add_argument(
        "--from",
        dest="from_files",
        action="append",
        default=[],
        metavar="FILE",
        help="a file of selectors, one a line: 'site HOST', 'url-prefix URL', 'sha256 HASH', "
        "'like FILE', 'account NAME'",
    )
    parser.add_argument(
        "--reason", required=True, metavar="TEXT", help="why (kept in the tombstones and the audit log)"
    )
    parser.add_argument("--dry-run", action="store_true", help="print what would go: per shard, per site, a sample")
    parser.add_argument("--json", action="store_true", help="print the result as one JSON object")
    parser.add_argument(
        "-s",
        dest="settings",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a setting (AWS_ENDPOINT_URL, IMAGECRAWL_STATE_DIR, IMAGECRAWL_NEAR_MAX_DISTANCE, ...)",
    )
    return parser


def selectors_of(args: argparse.Namespace) -> list[Selector]:
    chosen: list[Selector] = []
    for kind in KINDS:
        for value in getattr(args, kind.replace("-", "_")):
            chosen.append(parse_selector(kind, value))
    for path in args.from_files:
        chosen += read_selector_file(path)
    return chosen


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.WARNING, format="%(levelname)s: %(message)s")
    store: LocalStore | S3Store | None = None
    try:
        if not args.reason.strip():
            raise ConfigError("--reason must say why")
        settings = store_settings(args.store, args.settings)
        selectors = selectors_of(args)
        store, state = open_for_forget(settings)
        selection = Selection.resolve(
            selectors,
            salt=author_salt_of(state, settings),
            near_distance=settings.getint("IMAGECRAWL_NEAR_MAX_DISTANCE"),
        )
        if any(s.kind == "account" for s in selectors) and not selection.accounts:
            logger.warning("The store has no author salt (%s): no row can match --account", state / "author_salt")
        result = run(
            store,
            state,
            selection,
            args.reason.strip(),
            dry_run=args.dry_run,
            publish=tombstone_publisher(settings),
            settings=settings,
        )
    except Exception as exc:
        return stopped("imagecrawl forget", args.store, exc, store)
    print(json.dumps(result, default=str) if args.json else format_result(result))
    return 0


def stopped(prog: str, url: str, exc: Exception, store: LocalStore | S3Store | None) -> int:
    """One line on stderr for an error that stops a store command, and its exit status
    (:func:`imagecrawl.exitcodes.status_of`: 2 a usage error, 3 store trouble); a bug is raised again."""
    from imagecrawl.commands.crawl import user_error

    status = status_of(exc)
    if status is None:
        raise exc
    known = user_error(exc)  # also: a Redis server that cannot be reached, in the crawl's words
    if known is not None:
        words = str(known)
    elif isinstance(store, S3Store) and type(exc).__module__.startswith(("botocore", "boto3")):
        words = f"{url}: {s3_problem(exc, store)}"
    else:
        words = f"{url}: {exc}"
    print(f"{prog}: error: {redact.mask(words)}", file=sys.stderr)
    return status


def run(
    store: LocalStore | S3Store,
    state: Path,
    selection: Selection,
    reason: str,
    *,
    dry_run: bool,
    publish: Callable[[list[Tombstone]], Any] | None = None,
    settings: Any = None,
) -> dict[str, Any]:
    """Plan (and unless ``dry_run`` carry out) one forget run; first finish any run a crash interrupted."""
    journal = engine.Journal(state)
    if dry_run:
        plan, stones = engine.scan(store, selection, reason=reason)
        return {
            "dry_run": True,
            **_summary(plan),
            "pending": [p.op for p in journal.pending()],
            "near_tombstones": sum(1 for t in stones if t.near),
        }
    with lock.exclusive(state), distributed_hold(settings):
        # the ledger voids the claims of dead runs as it opens; this run's own statements go through it
        ledger = open_ledger(state / "ledger.sqlite3", owner=f"forget-{engine.new_op_id()}")
        try:
            return _carry_out(store, state, selection, reason, ledger, journal, publish, settings)
        finally:
            ledger.close()


def _carry_out(
    store: LocalStore | S3Store,
    state: Path,
    selection: Selection,
    reason: str,
    ledger: Ledger,
    journal: engine.Journal,
    publish: Callable[[list[Tombstone]], Any] | None,
    settings: Any,
) -> dict[str, Any]:
    writers = live_writers(ledger)
    if writers:
        raise StoreError(f"{writers[0]} is writing into this store now: run imagecrawl forget again when it has ended")
    if outbox_leftovers(state):
        commit_leftovers(store, state, settings if settings is not None else store_settings(store.url, []), ledger)
    current = engine.fingerprint(engine.described(selection), reason)
    resumed = None
    for pending in journal.pending():
        logger.warning("Completing the forget run %s that was interrupted (reason: %s)", pending.op, pending.reason)
        outcome = engine.carry_out(store, state, pending, journal, ledger, resumed=True, publish=publish)
        if pending.fingerprint == current and resumed is None:
            resumed = outcome
    if resumed is not None:
        return _outcome(resumed)
    plan, stones = engine.scan(store, selection, reason=reason)
    journal.write(plan, stones)
    failpoints.hit("forget.planned")
    return _outcome(engine.carry_out(store, state, plan, journal, ledger, publish=publish))


def _summary(plan: engine.Plan) -> dict[str, Any]:
    return {
        "op": plan.op,
        "reason": plan.reason,
        "selectors": plan.selectors,
        "rows": plan.rows,
        "rows_scanned": plan.rows_scanned,
        "shards_scanned": plan.shards_scanned,
        "shards": {s.key: s.remove for s in plan.shards},
        "by_site": plan.by_site,
        "sample": plan.sample,
    }


def _outcome(outcome: engine.Outcome) -> dict[str, Any]:
    return {
        "dry_run": False,
        **_summary(outcome.plan),
        "resumed": outcome.resumed,
        "rows_removed": outcome.plan.rows,
        "shards_rewritten": outcome.rewritten,
        "shards_deleted": outcome.deleted,
        "bytes_read": outcome.bytes_read,
        "bytes_written": outcome.bytes_written,
        "seconds": round(outcome.seconds, 3),
        "audit": f"{engine.AUDIT_LOG_DIR}/{outcome.plan.op}.json",
    }


def format_result(result: dict[str, Any]) -> str:
    lines = []
    head = "would remove" if result["dry_run"] else "removed"
    lines.append(
        f"{head} {result['rows']} of {result['rows_scanned']} rows in {len(result['shards'])} of "
        f"{result['shards_scanned']} shards (reason: {result['reason']})"
    )
    lines.append("selectors: " + "; ".join(result["selectors"]))
    if result["shards"]:
        lines.append("per shard:")
        lines += [f"  {n:>8}  {key}" for key, n in result["shards"].items()]
        lines.append("per site:")
        lines += [f"  {n:>8}  {site}" for site, n in result["by_site"].items()]
    if result["sample"]:
        lines.append("sample:")
        lines += [f"  {row['id']}  {row.get('page_url') or row.get('image_url') or ''}" for row in result["sample"]]
    if result["dry_run"]:
        if result["pending"]:
            lines.append(
                f"an interrupted forget run is pending ({', '.join(result['pending'])}): the next run completes it"
            )
        lines.append("dry run: nothing changed")
    else:
        if result["resumed"]:
            lines.append("this run had been interrupted: completed now")
        lines.append(
            f"shards rewritten {len(result['shards_rewritten'])}, deleted {len(result['shards_deleted'])}; "
            f"{result['bytes_written']} bytes written; tombstones kept for {result['rows_removed']} rows"
        )
        lines.append(f"audit record: {result['audit']}")
    return "\n".join(lines)
