"""The ``imagecrawl`` command: sandbox, demo, metadata, inspect."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    commands = {
        "sandbox": ("imagecrawl.sandbox.server", "serve the deterministic test/demo site on loopback"),
        "demo": ("imagecrawl.demo", "crawl a local sandbox into data/ and summarise what landed"),
        "metadata": ("imagecrawl.metadata.cli", "print the prompt/parameters embedded in image files"),
        "inspect": ("imagecrawl.inspect", "summarise a store (local path or s3://)"),
        "seed": ("imagecrawl.distributed.seeds", "push start URLs into a distributed crawl on Redis (or --reset it)"),
    }
    parser = argparse.ArgumentParser(prog="imagecrawl", description="Polite prompt/image dataset crawler.")
    parser.add_argument(
        "command", choices=sorted(commands), help="; ".join(f"{k}: {v[1]}" for k, v in commands.items())
    )
    if not args or args[0] in ("-h", "--help"):
        parser.print_help()
        return 0 if args else 2
    if args[0] not in commands:
        parser.parse_args(args[:1])  # prints the error and exits 2
    import importlib

    module = importlib.import_module(commands[args[0]][0])
    return int(module.main(args[1:]) or 0)


if __name__ == "__main__":
    raise SystemExit(main())
