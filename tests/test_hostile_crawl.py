"""The hostile crawl: one ``scrapy crawl`` over the sandbox's /hostile/ index reaches every behaviour;
the crawl finishes cleanly (exit 0, no traceback), each behaviour is counted under its stat, every
valid image is stored, and memory stays bounded."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.conftest import CrawlResult, read_store, run_crawl
from tests.sandbox.sites.hostile import BEHAVIOURS, DUPLICATES
from tests.servers import SandboxFactory

DOWNLOAD = "imagecrawl/download/errors/"
#: behaviour → the stat that must count it (a prefix ending in "/" accepts any key under it: the
#: exact failure of a reset, a truncation or an unparsable response depends on where the TCP stack
#: cuts it: data loss, connection lost or, when no FIN arrives, a timeout).
EXPECTED: dict[str, str] = {
    "ok": "imagecrawl/dedupe/unique",
    "truncated": DOWNLOAD,
    "oversize": DOWNLOAD + "maxsize",
    "oversize_chunked": DOWNLOAD + "maxsize",
    "slow_drip": DOWNLOAD + "timeout",
    "slow_headers": DOWNLOAD + "timeout",
    "reset": DOWNLOAD,
    "reset_before_headers": DOWNLOAD,
    "not_http": DOWNLOAD,
    "long_header": DOWNLOAD,
    "wrong_content_type": "imagecrawl/media/content_type_mismatch",
    "png_bomb": "imagecrawl/media/errors/too_many_pixels",
    "gzip_bomb": DOWNLOAD + "decompression_bomb",
    "text_chunk": "imagecrawl/validate/truncated/prompt",
    "bad_crc": "imagecrawl/media/errors/unreadable",
    "garbage": "imagecrawl/media/errors/unreadable",
    "empty": "imagecrawl/media/errors/empty",
    "image_is_html": "imagecrawl/media/errors/not_an_image",
    "not_found": "httperror/response_ignored_status_count/404",
    "duplicates": "imagecrawl/dedupe/dropped/sha256",
    "redirect_metadata": "imagecrawl/netguard/refused/metadata",
    "redirect_metadata_v6": "imagecrawl/netguard/refused/metadata",
    "redirect_private": "imagecrawl/netguard/refused/private",
    "redirect_external": "imagecrawl/identity/refused",  # no contact: dropped, no DNS, crawl goes on
    "redirect_loop": DOWNLOAD + "redirect_loop",
    "not_json": "imagecrawl/pages/errors/invalid_json",
    "deep_json": "imagecrawl/pages/errors/invalid_json",
    "wrong_shape": "imagecrawl/pages/errors/wrong_shape",
    "cursor_cycle": "dupefilter/filtered",
    "cursor_forever": "imagecrawl/pages/errors/cursor_loop",
    "invalid_utf8": "imagecrawl/media/images",
    "huge_prompt": "imagecrawl/validate/truncated/prompt",
    "many_images": "imagecrawl/pages/errors/too_many_images",
}
#: Valid images among the behaviours: all must reach the dataset.
KEPT = {
    "hostile/img/ok-0.png",
    "hostile/img/ok-1.png",
    "hostile/img/ok-2.png",
    "hostile/img/wrong-type.png",
    "hostile/img/text-chunk.png",
    "hostile/img/utf8.png",
    "hostile/img/huge-prompt.png",
}


@pytest.fixture(scope="module")
def hostile_crawl(
    tmp_path_factory: pytest.TempPathFactory, sandbox_factory: SandboxFactory
) -> tuple[CrawlResult, list[Any], Path]:
    tmp = tmp_path_factory.mktemp("hostile")
    sb = sandbox_factory.start(items=5, extra_args=["--hostile"], name="hostile-site")
    result = run_crawl(
        "site",
        store=tmp / "store",
        args={"start": sb.url("/hostile/")},
        settings={
            "SPIDER_MODULES": "tests.sitespider",
            # Generous: under load a 2 MiB JSON must not time out; the slow behaviours still do.
            "DOWNLOAD_TIMEOUT": "10",
            "RETRY_TIMES": "0",
            "DOWNLOAD_MAXSIZE": str(8 * 1024 * 1024),
            "DOWNLOAD_WARNSIZE": str(8 * 1024 * 1024),
        },
        timeout=150,
    )
    return result, sb.requests(), tmp / "store"


def test_registry_has_at_least_25_behaviours_and_each_is_mapped() -> None:
    assert len(BEHAVIOURS) >= 25
    assert set(EXPECTED) == set(BEHAVIOURS)


def test_every_behaviour_is_reached(hostile_crawl: Any) -> None:
    _, log, _ = hostile_crawl
    requested = {r["path"] for r in log}
    for b in BEHAVIOURS.values():
        assert b.path.split("?", 1)[0] in requested, b.name


def test_the_crawl_survives(hostile_crawl: Any) -> None:
    result, _, _ = hostile_crawl
    assert result.returncode == 0  # run_crawl also fails on any "Traceback" in the log
    assert "Traceback" not in result.stderr
    assert result.stats["finish_reason"] == "finished"
    assert "spider_exceptions" not in " ".join(result.stats)


def test_each_behaviour_is_counted_under_its_stat(hostile_crawl: Any) -> None:
    result, _, _ = hostile_crawl
    stats = result.stats
    need: dict[str, int] = {}
    for key in EXPECTED.values():
        need[key] = need.get(key, 0) + 1
    need["imagecrawl/dedupe/dropped/sha256"] = DUPLICATES - 1
    need["imagecrawl/dedupe/unique"] = len(KEPT) + 1  # + the one kept copy of the duplicates
    # The download-error prefix must also cover the exact kinds counted above.
    need[DOWNLOAD] = sum(n for k, n in need.items() if k.startswith(DOWNLOAD))
    for key, count in need.items():
        got = sum(v for k, v in stats.items() if k.startswith(key)) if key.endswith("/") else stats.get(key, 0)
        assert got >= count, f"{key}: {got} < {count}; " + " ".join(
            f"{k}={v}" for k, v in sorted(stats.items()) if "error" in k
        )


def test_nothing_valid_is_lost(hostile_crawl: Any) -> None:
    _, _, store = hostile_crawl
    table = read_store(store, ["image_url", "prompt"])
    urls = [u.split("/", 3)[3] for u in table.column("image_url").to_pylist()]
    assert set(urls) >= KEPT
    assert sum(u.startswith("hostile/dup/") for u in urls) == 1
    assert len(urls) == len(KEPT) + 1
    prompts = dict(zip(urls, table.column("prompt").to_pylist(), strict=True))
    # Decoded leniently (the exact replacement depends on the detected encoding), never dropped.
    assert prompts["hostile/img/utf8.png"].startswith("a cat ")
    assert prompts["hostile/img/utf8.png"].endswith(" space")
    assert prompts["hostile/img/huge-prompt.png"].startswith("masterpiece, ")


def test_memory_stays_bounded(hostile_crawl: Any) -> None:
    result, log, _ = hostile_crawl
    assert result.stats["memusage/max"] < 600 * 1024 * 1024
    # The 100k-image page costs at most the spider's cap in requests, not 100k.
    assert sum(r["path"].startswith("/hostile/img/many/") for r in log) <= 100
    # Oversized bodies were cut off near DOWNLOAD_MAXSIZE, not read to the end.
    for record in log:
        if record["path"].startswith("/hostile/img/oversize"):
            assert record["bytes"] < 32 * 1024 * 1024
