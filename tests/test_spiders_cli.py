"""``imagecrawl spiders``: the list of every spider's -a arguments comes from the spiders' own ``__init__``
(the same list that answers an unknown ``-a`` argument), and every argument says what it means."""

from __future__ import annotations

import io
import json
from contextlib import redirect_stderr, redirect_stdout

from scrapy.spiderloader import SpiderLoader
from scrapy.utils.project import get_project_settings

from imagecrawl import cli
from imagecrawl.spider import spider_arguments


def _run(*args: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        code = cli.main(["spiders", *args])
    return code, out.getvalue(), err.getvalue()


def test_every_argument_of_every_spider_is_listed_with_its_meaning() -> None:
    loader = SpiderLoader.from_settings(get_project_settings())
    code, out, _ = _run("--json")
    assert code == 0
    listed = {s["name"]: s for s in json.loads(out)["spiders"]}
    assert sorted(listed) == sorted(loader.list()) == ["civitai", "gallery", "lexica", "recheck", "sitemap", "urls"]
    for name, spider in listed.items():
        cls = loader.load(name)
        assert [a["name"] for a in spider["arguments"]] == spider_arguments(cls), name
        assert set(cls.argument_help) == set(spider_arguments(cls)), name  # no argument without a meaning
        assert all(a["help"] for a in spider["arguments"]) and spider["about"], name
    urls = {a["name"]: a for a in listed["urls"]["arguments"]}
    assert urls["url_col"]["default"] == "url" and urls["input"]["default"] is None


def test_text_listing_and_an_unknown_name() -> None:
    code, out, _ = _run("lexica")
    assert code == 0 and out.startswith("lexica: Lexica")
    assert "  -a q=...  the search query (required)\n" in out
    assert "  -a api_url=...  the base URL of the API (default https://lexica.art)\n" in out
    code, _, err = _run("lexika")
    assert code == 2 and err.startswith("imagecrawl: error: unknown spider: 'lexika' (did you mean 'lexica'?)")
