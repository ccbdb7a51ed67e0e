"""The value cleaners shared by the page objects and the record builder: defaults and named variants."""

from __future__ import annotations

import math
from decimal import Decimal
from typing import Any

import pytest

from imagecrawl.values import is_http_url, to_float, to_int, to_text


@pytest.mark.parametrize(
    ("value", "default", "any_value", "caption"),
    [
        (None, None, None, None),
        ("  a b \n", "a b", "a b", "a b"),
        ("", None, None, None),
        ("\x00", None, None, "\x00"),
        ("a\x00b", "ab", "ab", "a\x00b"),
        (12, "12", "12", "12"),
        (1.5, "1.5", "1.5", "1.5"),
        (True, None, "True", "True"),
        ({"a": 1}, None, "{'a': 1}", None),
        ([1], None, "[1]", None),
        ((1, 2), "(1, 2)", "(1, 2)", "(1, 2)"),
    ],
)
def test_to_text(value: Any, default: str | None, any_value: str | None, caption: str | None) -> None:
    assert to_text(value) == default
    assert to_text(value, refuse=()) == any_value  # the record builder
    assert to_text(value, refuse=(dict, list), keep_nul=True) == caption  # URL-list captions


@pytest.mark.parametrize(
    ("value", "integral", "truncated"),
    [
        (None, None, None),
        (True, None, None),
        (7, 7, 7),
        (" 12 ", 12, 12),
        ("12.0", 12, None),
        ("1e3", 1000, None),
        ("12.5", None, None),
        (12.0, 12, 12),
        (12.7, None, 12),
        (-2.7, None, -2),
        (math.inf, None, None),
        (math.nan, None, None),
        (Decimal("3.9"), None, 3),
        (b"42", None, 42),
        ("seven", None, None),
        ([1], None, None),
    ],
)
def test_to_int(value: Any, integral: int | None, truncated: int | None) -> None:
    assert to_int(value) == integral
    assert to_int(value, truncate=True) == truncated


def test_to_int_bounds() -> None:
    assert to_int(2**63) == 2**63  # unbounded by default
    assert to_int(2**63, -(2**63), 2**63 - 1) is None
    assert to_int(-1, 0) is None and to_int(0, 0) == 0
    assert to_int("2147483648", 0, 2**31 - 1, truncate=True) is None
    assert to_int("2147483647", 0, 2**31 - 1, truncate=True) == 2**31 - 1


def test_to_float() -> None:
    assert to_float(" 7.5 ") == 7.5 and to_float(3) == 3.0 and to_float("1e3") == 1000.0
    for bad in (None, True, "x", "nan", math.inf, [1.0], 10**400):
        assert to_float(bad) is None, bad
    # float() ignores surrounding whitespace except the \x1c-\x1f separators, which str.strip() removes
    assert to_float("\x1c7.5") == 7.5
    assert to_float("\x1c7.5", strip=False) is None
    assert to_float(" 7.5 ", strip=False) == 7.5


def test_is_http_url() -> None:
    assert is_http_url("https://a.example/x") and is_http_url(" http://a.example ")
    for bad in (None, "", "ftp://a.example/", "//a.example/x", "http://", "http://[::1", 12):
        assert not is_http_url(bad), bad
