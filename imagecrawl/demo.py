"""``imagecrawl demo``: start the sandbox on loopback, crawl it with every API/gallery spider into a
store, and print what landed. Offline: nothing leaves 127.0.0.1."""

from __future__ import annotations

import argparse
import logging
import os
from collections import Counter
from collections.abc import Sequence
from typing import Any

logger = logging.getLogger(__name__)

#: Politeness caps are for other people's sites; the sandbox is ours and on loopback, so its caps are
#: lifted as a user would for a site they own. The pacing gate stays on: it starts at a quarter of the
#: cap and finds the sandbox's pace from its answers, as it would for any site.
LOOPBACK_SETTINGS: dict[str, Any] = {
    "DOWNLOAD_DELAY": 0,
    "CONCURRENT_REQUESTS_PER_DOMAIN": 16,
    "IMAGECRAWL_MAX_RATE_PER_SITE": 200,
    "IMAGECRAWL_MAX_CONCURRENCY_PER_SITE": 16,
    "IMAGECRAWL_ALLOWED_NETWORKS": ["127.0.0.0/8", "::1/128"],
}


def count_rows(store: str) -> int:
    """Rows committed in ``store`` (0 for a store that does not exist yet)."""
    from imagecrawl.inspect import dataset_for

    try:
        return int(dataset_for(store).count_rows())
    except (FileNotFoundError, OSError):
        return 0


def summarize(store: str, samples: int = 3, before: int | None = None) -> str:
    """Rows per source (and how many are new since ``before``) and a few prompts, read back from the shards."""
    import pyarrow.compute as pc

    from imagecrawl.inspect import dataset_for

    dataset = dataset_for(store)
    table = dataset.to_table(columns=["source", "prompt", "metadata_source"])
    new = "" if before is None else f" ({table.num_rows - before} new)"
    lines = [f"{table.num_rows} rows in {store}{new}"]
    if table.num_rows == 0:
        return lines[0]
    counts = table.group_by("source").aggregate([("source", "count")]).sort_by("source")
    for source, count in zip(counts["source"].to_pylist(), counts["source_count"].to_pylist(), strict=True):
        lines.append(f"  {source}: {count} rows")
    by_origin = Counter(table["metadata_source"].to_pylist())
    origins = ", ".join(f"{origin or 'none'}={n}" for origin, n in sorted(by_origin.items(), key=str))
    lines.append(f"  prompt came from: {origins}")
    with_prompt = table.filter(pc.invert(pc.is_null(table["prompt"])))
    for row in with_prompt.slice(0, samples).to_pylist():
        prompt = " ".join(str(row["prompt"]).split())
        lines.append(f"  [{row['source']}] {prompt[:100]}")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="imagecrawl demo", description=__doc__)
    parser.add_argument("--items", type=int, default=60, help="items per source in the sandbox (default 60)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--store", default="data/", help="where the shards go (default data/)")
    parser.add_argument("--query", default="portrait", help="the Lexica search query")
    parser.add_argument("--log-level", default="WARNING")
    args = parser.parse_args(argv)

    os.environ.setdefault("SCRAPY_SETTINGS_MODULE", "imagecrawl.settings")
    from scrapy.crawler import AsyncCrawlerProcess
    from scrapy.utils.project import get_project_settings

    # the sandbox lives in tests/sandbox of the clone; the imagecrawl command put it on the path
    from tests.sandbox.testing import sandbox

    before = count_rows(args.store)
    with sandbox(items=args.items, seed=args.seed) as site:
        base = site.base_url.rstrip("/")
        print(f"sandbox running at {site.base_url}")
        settings = get_project_settings()
        settings.setdict(
            {**LOOPBACK_SETTINGS, "IMAGECRAWL_STORE": args.store, "LOG_LEVEL": args.log_level},
            priority="cmdline",
        )
        process = AsyncCrawlerProcess(settings)
        process.crawl("civitai", api_url=base)
        process.crawl("lexica", api_url=base, q=args.query)
        process.crawl("gallery", profile="sandbox", start_url=f"{base}/gallery/")
        process.start()
    print(summarize(args.store, before=before))
    print(
        "\nNext: inspect it with `uv run imagecrawl inspect " + args.store + "`, or crawl a real site politely:\n"
        "  uv run scrapy crawl civitai -a max_items=500 -s IMAGECRAWL_CONTACT=you@example.org"
    )
    return 0
