from __future__ import annotations

import csv
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from imagecrawl.pages.urllist import UrlList, UrlRow, check_url, detect_format, parse_shard

GOOD = [(f"https://img.example/{i}.png", f"caption {i}") for i in range(10)]
# (url, caption) rows, with bad ones at known positions
ROWS: list[tuple[object, object]] = [
    *GOOD[:3],
    ("", "empty url"),  # 3 missing_url
    (None, "null url"),  # 4 missing_url
    ("ftp://img.example/x.png", "ftp"),  # 5 bad_scheme
    ("not a url", "words"),  # 6 invalid_url
    ("http://", "no host"),  # 7 invalid_url
    ("http://img.example:99999/x.png", "bad port"),  # 8 invalid_url
    *GOOD[3:],  # 9..15
    ("  https://img.example/spaced.png  ", None),  # 16: stripped; no caption
]
EXPECTED_GOOD = {0, 1, 2, *range(9, 17)}


def write(
    tmp_path: Path,
    fmt: str,
    rows: list[tuple[object, object]] = ROWS,
    url_col: str = "url",
    caption_col: str = "caption",
) -> Path:
    path = tmp_path / f"list.{fmt}"
    if fmt == "parquet":
        table = pa.table(
            {
                url_col: [r[0] for r in rows],
                caption_col: [r[1] for r in rows],
                "other": list(range(len(rows))),
            }
        )
        pq.write_table(table, path, row_group_size=4)
    elif fmt in ("csv", "tsv"):
        with open(path, "w", newline="") as fh:
            writer = csv.writer(fh, delimiter="\t" if fmt == "tsv" else ",")
            writer.writerow(["other", url_col, caption_col])
            for i, (url, caption) in enumerate(rows):
                writer.writerow([i, "" if url is None else url, "" if caption is None else caption])
    elif fmt == "jsonl":
        with open(path, "w") as fh:
            for url, caption in rows:
                fh.write(json.dumps({url_col: url, caption_col: caption, "x": 1}) + "\n")
    return path


@pytest.mark.parametrize("fmt", ["parquet", "csv", "tsv", "jsonl"])
def test_formats_yield_good_rows_and_count_bad(fmt: str, tmp_path: Path) -> None:
    skipped: list[str] = []
    urls = UrlList(write(tmp_path, fmt), on_skip=skipped.append)
    rows = list(urls)
    assert {r.row_index for r in rows} == EXPECTED_GOOD
    assert rows[0] == UrlRow(0, "https://img.example/0.png", "caption 0")
    assert rows[-1] == UrlRow(16, "https://img.example/spaced.png", None)
    assert dict(urls.skipped) == {"missing_url": 2, "bad_scheme": 1, "invalid_url": 3}
    assert sorted(skipped) == sorted(urls.skipped.elements())


@pytest.mark.parametrize("fmt", ["parquet", "csv", "jsonl"])
def test_custom_columns(fmt: str, tmp_path: Path) -> None:
    path = write(tmp_path, fmt, GOOD, url_col="image_link", caption_col="alt")
    rows = list(UrlList(path, url_col="image_link", caption_col="alt"))
    assert [(r.url, r.caption) for r in rows] == GOOD
    # default columns absent: the url column is required, the default caption column is optional
    if fmt != "jsonl":
        with pytest.raises(ValueError, match="no column 'url'"):
            UrlList(path).check()
        with pytest.raises(ValueError, match="no column 'text'"):
            UrlList(path, url_col="image_link", caption_col="text").check()
    assert [r.caption for r in UrlList(path, url_col="image_link")] == [None] * len(GOOD)
    assert [r.caption for r in UrlList(path, url_col="image_link", caption_col=None)] == [None] * len(GOOD)


@pytest.mark.parametrize("fmt", ["parquet", "csv", "jsonl"])
@pytest.mark.parametrize("n", [1, 2, 3, 7, 40])
def test_shards_cover_every_row_exactly_once(fmt: str, n: int, tmp_path: Path) -> None:
    path = write(tmp_path, fmt)
    seen: list[int] = []
    skipped = 0
    for i in range(n):
        shard = UrlList(path, shard=f"{i}/{n}")
        rows = list(shard)
        assert all(r.row_index % n == i for r in rows)
        seen.extend(r.row_index for r in rows)
        skipped += sum(shard.skipped.values())
    assert sorted(seen) == sorted(EXPECTED_GOOD)
    assert skipped == len(ROWS) - len(EXPECTED_GOOD)


def test_parquet_streams_in_batches(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import imagecrawl.pages.urllist as mod

    rows = [(f"https://img.example/{i}.png", None) for i in range(1000)]
    path = write(tmp_path, "parquet", rows)
    monkeypatch.setattr(mod, "BATCH_ROWS", 64)
    calls: list[int] = []
    original = pq.ParquetFile.iter_batches

    def spy(self: pq.ParquetFile, *args: object, **kwargs: object):  # type: ignore[no-untyped-def]
        calls.append(kwargs["batch_size"])  # type: ignore[arg-type]
        assert kwargs["columns"] == ["url", "caption"]  # only the needed columns are read
        return original(self, *args, **kwargs)

    monkeypatch.setattr(pq.ParquetFile, "iter_batches", spy)
    iterator = iter(UrlList(path, shard="1/4"))
    assert next(iterator).row_index == 1
    assert calls == [64]
    assert sum(1 for _ in iterator) == 249


def test_jsonl_bad_lines_and_txt(tmp_path: Path) -> None:
    path = tmp_path / "l.ndjson"
    path.write_text(
        '{"url": "https://a.example/1.png"}\n\nnot json\n[1]\n{"url": "https://a.example/2.png", '
        '"caption": {"nested": 1}}\n'
    )
    urls = UrlList(path)
    assert [(r.row_index, r.caption) for r in urls] == [(0, None), (3, None)]
    assert dict(urls.skipped) == {"bad_row": 2}
    txt = tmp_path / "l.txt"
    txt.write_text("https://a.example/1.png\n\nmailto:x@y\nhttps://a.example/2.png\n")
    assert [r.row_index for r in UrlList(txt)] == [0, 2]
    data = tmp_path / "list.data"
    data.write_text("https://a.example/1.png\n")
    assert len(list(UrlList(data, input_format="txt"))) == 1


def test_argument_errors(tmp_path: Path) -> None:
    assert parse_shard(None) == (0, 1) and parse_shard("3/4") == (3, 4)
    for bad in ("4/4", "1", "a/b", "-1/2", "0/0"):
        with pytest.raises(ValueError, match="shard"):
            parse_shard(bad)
    assert detect_format("x.PARQUET") == "parquet" and detect_format("x.bin", "ndjson") == "jsonl"
    with pytest.raises(ValueError, match="input_format"):
        detect_format("x.json")
    with pytest.raises(ValueError, match="input_format= must be one of"):
        detect_format("x.csv", "xml")
    with pytest.raises(ValueError, match="not found"):
        UrlList(tmp_path / "missing.csv")
    bad = tmp_path / "bad.parquet"
    bad.write_bytes(b"not parquet")
    with pytest.raises(ValueError, match="not a readable Parquet"):
        UrlList(bad).check()
    assert check_url("HTTPS://X.example/a") == ("HTTPS://X.example/a", None)
    assert check_url("javascript:alert(1)") == (None, "bad_scheme")
    assert check_url("https://a b/") == (None, "invalid_url")
