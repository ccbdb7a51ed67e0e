"""The ``imagecrawl`` command: sandbox, demo, metadata, inspect, forget, recheck, seed.

``demo`` and ``sandbox`` start the sandbox, the test and demo site in tests/sandbox of a clone of the
repository; they install its extra themselves through uv when it is missing.

Each subcommand lives in its own module with its own ``main(argv)`` and ``--help``; this only
dispatches, turns a missing optional part or a user error into one line (exit 2), and ends quietly
when the reader of a pipe goes away (``imagecrawl metadata *.png | head``).
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import os
import shutil
import sys
from collections.abc import Sequence
from pathlib import Path

from imagecrawl.errors import ConfigError, StoreError

#: name -> (module, one-line summary, the extra it needs or "")
COMMANDS: dict[str, tuple[str, str, str]] = {
    "demo": ("imagecrawl.demo", "crawl a local sandbox into data/ and summarise what landed", "sandbox"),
    "forget": ("imagecrawl.forget.cli", "remove rows on request and keep tombstones (docs/forget.md)", ""),
    "inspect": ("imagecrawl.inspect", "summarise a store (local path or s3://bucket/prefix)", ""),
    "metadata": ("imagecrawl.metadata.cli", "print the prompt/parameters embedded in image files", ""),
    "recheck": ("imagecrawl.forget.recheck", "re-read sites' AI opt-outs and forget rows of those that now refuse", ""),
    "sandbox": ("tests.sandbox.server", "serve the deterministic test/demo site on loopback", ""),
    "seed": ("imagecrawl.distributed.seeds", "push start URLs into a distributed crawl on Redis", "redis"),
    "spiders": ("imagecrawl.spiders_cli", "list the spiders and their -a arguments", ""),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="imagecrawl",
        description="Polite prompt/image dataset crawler. Crawls run with `scrapy crawl SPIDER` "
        "(`scrapy list` names the spiders); these are the helpers around them.",
        epilog="`imagecrawl COMMAND --help` describes each command.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", title="commands")
    for name, (_module, summary, extra) in COMMANDS.items():
        sub.add_parser(name, help=summary + (f" (extra {extra!r})" if extra else ""), add_help=False)
    return parser


def _fail(message: str) -> int:
    print(f"imagecrawl: error: {message}", file=sys.stderr)
    return 2


#: the commands that start the sandbox: the project's test and demo site, which lives in tests/sandbox of a
#: clone of the repository (not in the installed package) and needs the "sandbox" extra (aiohttp)
SANDBOX_COMMANDS = ("demo", "sandbox")
#: set while a sandbox command runs again under ``uv run --extra sandbox`` (so it is tried once)
_SYNCED = "_IMAGECRAWL_SANDBOX_RERUN"


def _sandbox_ready(args: list[str]) -> int | None:
    """Put the clone's tests/sandbox on the path and make sure aiohttp is there: if it is not and uv is, run
    the same command again through ``uv run --extra sandbox`` (which installs it); else one line, exit 2."""
    repo = Path(__file__).resolve().parents[1]
    if not (repo / "tests" / "sandbox" / "__init__.py").is_file():
        return _fail(
            f"imagecrawl {args[0]} runs the sandbox, which lives in tests/sandbox of a clone of the repository"
        )
    if str(repo) not in sys.path:
        sys.path.insert(0, str(repo))
    if importlib.util.find_spec("aiohttp") is not None:
        return None
    uv = shutil.which("uv")
    if uv is not None and not os.environ.get(_SYNCED):
        os.environ[_SYNCED] = "1"
        os.execv(uv, [uv, "run", "--project", str(repo), "--extra", "sandbox", "imagecrawl", *args])
    return _fail(
        f"imagecrawl {args[0]} needs the 'sandbox' extra (aiohttp is not installed): "
        "uv sync --extra sandbox, or pip install 'imagecrawl[sandbox]'"
    )


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    if not args or args[0] in ("-h", "--help"):
        parser.print_help(sys.stdout if args else sys.stderr)
        return 0 if args else 2
    if args[0] not in COMMANDS:
        parser.parse_args(args[:1])  # prints the error (with the choices) and exits 2
    module_name, _summary, extra = COMMANDS[args[0]]
    if args[0] in SANDBOX_COMMANDS and (failed := _sandbox_ready(args)) is not None:
        return failed
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if not extra:
            raise
        return _fail(
            f"imagecrawl {args[0]} needs the {extra!r} extra ({exc.name} is not installed): "
            f"uv sync --extra {extra}, or pip install 'imagecrawl[{extra}]'"
        )
    try:
        return int(module.main(args[1:]) or 0)
    except BrokenPipeError:
        # The reader went away (`| head`): stop quietly, and keep Python from complaining at exit.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0
    except (ConfigError, StoreError) as exc:
        return _fail(str(exc))


if __name__ == "__main__":
    raise SystemExit(main())
