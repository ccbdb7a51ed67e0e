"""The pure parsers of AI usage preferences: the aipref ``Content-Usage`` dictionary (header and
robots.txt lines), Cloudflare ``Content-Signal`` lines, and which robots.txt lines apply to a URL."""

from __future__ import annotations

import pytest

from imagecrawl.optout.aipref import (
    parse_content_signal,
    parse_content_usage_header,
    parse_usage_dictionary,
    signal_refuses_training,
    usage_refuses_training,
)
from imagecrawl.optout.robotsprefs import parse_robots_prefs, robots_refusal


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("train-ai=n", {"train-ai": "n"}),
        ("train-ai=n, search=y", {"train-ai": "n", "search": "y"}),
        ("train-ai=y;note=1,train-genai=n", {"train-ai": "y", "train-genai": "n"}),
        ("train-ai=y, train-ai=n", {"train-ai": "n"}),  # the later duplicate wins (RFC 9651)
        ("search", {"search": "?1"}),
        ("train-ai=N", {"train-ai": "n"}),
        ("", {}),
        ("Train-AI=n", None),  # keys are lower-case in RFC 9651: the field is ignored
        ("train-ai=n,,search=y", None),
        ("train-ai=n search=y", None),
    ],
)
def test_usage_dictionary(value: str, expected: dict[str, str] | None) -> None:
    assert parse_usage_dictionary(value) == expected


def test_usage_header_combines_its_field_lines() -> None:
    assert parse_content_usage_header(["search=y", "train-ai=n"]) == {"search": "y", "train-ai": "n"}
    assert parse_content_usage_header([]) is None


@pytest.mark.parametrize(
    ("prefs", "refused"),
    [
        ({"train-ai": "n"}, "train-ai"),
        ({"train-genai": "n"}, "train-genai"),
        ({"train-ai": "n", "train-genai": "y"}, None),  # the more specific category decides
        ({"train-ai": "y", "train-genai": "n"}, "train-genai"),
        ({"bots": "n"}, "bots"),  # all automated processing: training inherits it
        ({"bots": "n", "train-ai": "y"}, None),
        ({"search": "n"}, None),
        ({"train-ai": "?1"}, None),
        ({}, None),
        (None, None),
    ],
)
def test_usage_refuses_generative_training(prefs: dict[str, str] | None, refused: str | None) -> None:
    assert usage_refuses_training(prefs) == refused


def test_content_signal() -> None:
    signals = parse_content_signal("search=yes, AI-Train=No, ai-input=maybe, junk")
    assert signals == {"search": "yes", "ai-train": "no"}
    assert signal_refuses_training(signals)
    assert not signal_refuses_training(parse_content_signal("search=yes,ai-train=yes"))
    assert not signal_refuses_training(parse_content_signal("search=no"))


CLOUDFLARE = """\
# As a condition of accessing this website, you agree to abide by the following content signals:
User-Agent: *
Content-Signal: search=yes,ai-train=no
Allow: /
"""


def refusal(text: str, url: str, token: str = "imagecrawl") -> tuple[str, str] | None:
    return robots_refusal(parse_robots_prefs(text), token, url)


def test_cloudflare_default_refuses_the_whole_site() -> None:
    assert refusal(CLOUDFLARE, "https://s.example/a.png") == ("content_signal", "search=yes,ai-train=no")
    assert refusal(CLOUDFLARE.replace("ai-train=no", "ai-train=yes"), "https://s.example/a.png") is None


def test_a_path_scoped_line_beats_the_site_wide_one() -> None:
    text = (
        "User-agent: *\nContent-Signal: ai-train=no\nContent-Signal: /open/ ai-train=yes\n"
        "Content-Usage: train-ai=y\nContent-Usage: /closed/*.png$ train-ai=n\n"
    )
    assert refusal(text, "https://s.example/open/a.png") is None
    assert refusal(text, "https://s.example/other/a.png") == ("content_signal", "ai-train=no")
    assert refusal(text.replace("ai-train=no", "ai-train=yes"), "https://s.example/closed/a.png") == (
        "content_usage",
        "/closed/*.png$ train-ai=n",
    )
    assert refusal(text.replace("ai-train=no", "ai-train=yes"), "https://s.example/closed/a.png?x") is None


def test_the_longest_matching_path_wins_and_a_no_in_either_kind_wins() -> None:
    text = "User-agent: *\nContent-Usage: /a/ train-ai=n\nContent-Usage: /a/b/ train-ai=y\n"
    assert refusal(text, "https://s.example/a/b/c.png") is None
    assert refusal(text, "https://s.example/a/c.png") == ("content_usage", "/a/ train-ai=n")
    both = text + "Content-Signal: /a/b/ ai-train=no\n"
    assert refusal(both, "https://s.example/a/b/c.png") == ("content_signal", "/a/b/ ai-train=no")


def test_our_group_replaces_the_star_group_per_kind() -> None:
    text = (
        "User-agent: *\nContent-Usage: train-ai=n\nContent-Signal: ai-train=no\n\n"
        "User-agent: otherbot\nUser-agent: imagecrawl/2.0\nContent-Usage: train-ai=y\n"
    )
    # Content-Usage: our own group says yes; Content-Signal: our group says nothing, so "*" applies.
    assert refusal(text, "https://s.example/a.png") == ("content_signal", "ai-train=no")
    assert refusal(text.replace("Content-Signal: ai-train=no\n", ""), "https://s.example/a.png") is None
    assert refusal(text, "https://s.example/a.png", token="thirdbot") == ("content_signal", "ai-train=no")


def test_lines_before_any_group_are_read_as_the_star_group_and_junk_is_ignored() -> None:
    text = "Content-Usage: train-genai=n\n\nUser-agent: *\nDisallow: /x\n"
    assert refusal(text, "https://s.example/a.png") == ("content_usage", "train-genai=n")
    junk = "User-agent: *\nContent-Usage: Train-AI=n\nContent-Signal: ai-train\nContent-Usage\n\x00\n"
    assert refusal(junk, "https://s.example/a.png") is None
    assert not parse_robots_prefs("User-agent: *\nDisallow: /\n")


def test_odd_case_spacing_comments_and_crlf_are_read() -> None:
    text = "User-Agent:*\r\ncontent-usage :  /x/   train-ai=n  # comment\r\n"
    assert refusal(text, "https://s.example/x/1") == ("content_usage", "/x/   train-ai=n")
    assert refusal(text, "https://s.example/y/1") is None


def test_kinds_switched_off_are_not_asked() -> None:
    prefs = parse_robots_prefs(CLOUDFLARE + "Content-Usage: train-ai=n\n")
    assert robots_refusal(prefs, "imagecrawl", "https://s.example/a", ("content-usage",)) == (
        "content_usage",
        "train-ai=n",
    )
    assert robots_refusal(prefs, "imagecrawl", "https://s.example/a", ()) is None
