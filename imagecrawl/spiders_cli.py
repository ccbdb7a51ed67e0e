"""``imagecrawl spiders``: every spider and its ``-a`` arguments, with defaults and meanings.

The list is generated from the spiders themselves: the arguments are the keyword parameters of each
spider's ``__init__`` (:func:`imagecrawl.spider.spider_arguments`, the same list that answers an unknown
``-a`` argument), their defaults come from that signature, their meanings from the spider's
``argument_help``. ``--json`` prints one JSON object for machines.
"""

from __future__ import annotations

import argparse
import inspect
import json
import sys
from collections.abc import Sequence
from typing import Any

from scrapy.spiderloader import SpiderLoader
from scrapy.utils.project import get_project_settings

from imagecrawl.spider import spider_arguments


def describe(spidercls: type) -> dict[str, Any]:
    """A spider's name, first docstring line and arguments (name, default, meaning)."""
    params = inspect.signature(spidercls.__init__).parameters  # type: ignore[misc]
    helps: dict[str, str] = getattr(spidercls, "argument_help", {})
    arguments = []
    for name in spider_arguments(spidercls):
        default = params[name].default
        arguments.append(
            {
                "name": name,
                "default": None if default is inspect.Parameter.empty else default,
                "help": helps.get(name, ""),
            }
        )
    own = spidercls.__dict__.get("__doc__") or sys.modules[spidercls.__module__].__doc__ or ""
    doc = inspect.cleandoc(own).split("\n\n")[0].replace("\n", " ")
    return {"name": spidercls.name, "about": doc, "arguments": arguments}  # type: ignore[attr-defined]


def all_spiders() -> list[dict[str, Any]]:
    loader = SpiderLoader.from_settings(get_project_settings())
    return [describe(loader.load(name)) for name in sorted(loader.list())]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="imagecrawl spiders", description=__doc__.split("\n\n")[0])
    parser.add_argument("names", nargs="*", help="only these spiders")
    parser.add_argument("--json", action="store_true", help="one JSON object for machines")
    args = parser.parse_args(argv)
    spiders = all_spiders()
    known = [s["name"] for s in spiders]
    for name in args.names:
        if name not in known:
            from imagecrawl.errors import unknown_name

            raise unknown_name("spider", name, known)
    if args.names:
        spiders = [s for s in spiders if s["name"] in args.names]
    if args.json:
        print(json.dumps({"spiders": spiders}, indent=1, default=str))
        return 0
    out = sys.stdout
    for spider in spiders:
        out.write(f"{spider['name']}: {spider['about']}\n")
        for arg in spider["arguments"]:
            default = "" if arg["default"] is None else f" (default {arg['default']!s})"
            out.write(f"  -a {arg['name']}=...  {arg['help']}{default}\n")
        out.write("\n")
    return 0
