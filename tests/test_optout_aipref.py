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
from imagecrawl.optout.robotsprefs import decide_keys, parse_robots_prefs, robots_refusal


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


# --- each key decided on its own, RFC 9309 whitespace -------------------------------------------


@pytest.mark.parametrize(
    "line",
    [
        "Content-Signal: /img/\tai-train=no",
        "Content-Signal:\t/img/\tai-train=no",
        "Content-Signal: /img/ \t ai-train=no",
        "Content-Signal :\t/img/\t\tai-train=no\t# trailing comment",
        "content-signal:/img/\tai-train=no, search=yes",
        "\tContent-Signal:\t/img/\tsearch=yes,\tai-train=no\t",
    ],
)
def test_tabs_between_path_and_preferences_are_whitespace(line: str) -> None:
    text = f"User-agent:\t*\n{line}\n"
    found = refusal(text, "https://s.example/img/a.png")
    assert found is not None and found[0] == "content_signal"
    assert refusal(text, "https://s.example/other/a.png") is None


@pytest.mark.parametrize(
    ("later", "url", "refused"),
    [
        # a line that says nothing about ai-train leaves the site-wide refusal in force
        ("Content-Signal: /img/ search=yes", "/img/a.png", True),
        ("Content-Signal: /img/\tsearch=yes, ai-input=yes", "/img/a.png", True),
        ("Content-Signal: /img/ ai-train=maybe", "/img/a.png", True),  # not a statement about ai-train
        ("Content-Signal: /img/", "/img/a.png", True),  # a path with no preferences
        ("Content-Signal: /img/ ai-train=yes", "/img/a.png", False),  # it does say something: allowed
        ("Content-Signal: /img/ ai-train=yes", "/other/a.png", True),
        ("Content-Signal: /img/*.png$ ai-train=yes", "/img/a.png", False),
        ("Content-Signal: /img/*.png$ ai-train=yes", "/img/a.jpg", True),
    ],
)
def test_content_signal_keys_are_decided_separately(later: str, url: str, refused: bool) -> None:
    text = f"User-agent: *\nContent-Signal: ai-train=no\n{later}\n"
    found = refusal(text, "https://s.example" + url)
    assert (found is not None) is refused
    if refused:
        assert found == ("content_signal", "ai-train=no")


@pytest.mark.parametrize(
    ("lines", "url", "expected"),
    [
        # train-ai stated site-wide, a longer line about search only: train-ai=n still decides
        (["train-ai=n", "/img/ search=y"], "/img/a", ("content_usage", "train-ai=n")),
        # a longer line about the more specific category lifts it for that category
        (["train-ai=n", "/img/ train-genai=y"], "/img/a", None),
        (["train-ai=n", "/img/ train-genai=y"], "/doc/a", ("content_usage", "train-ai=n")),
        # a site-wide train-genai=n is not lifted by a longer line about the general category
        (["train-genai=n", "/img/ train-ai=y"], "/img/a", ("content_usage", "train-genai=n")),
        # the longest line that states the key decides it
        (["/a/ train-ai=n", "/a/b/ search=y", "/a/b/c/ train-ai=y"], "/a/b/x", ("content_usage", "/a/ train-ai=n")),
        (["/a/ train-ai=n", "/a/b/ search=y", "/a/b/c/ train-ai=y"], "/a/b/c/x", None),
        # equally long lines that disagree: "n" wins, whichever comes first
        (["/a/ train-ai=y", "/a/ train-ai=n"], "/a/x", ("content_usage", "/a/ train-ai=n")),
        (["/a/ train-ai=n", "/a/ train-ai=y"], "/a/x", ("content_usage", "/a/ train-ai=n")),
        # bots is the root: an unstated train-ai inherits it, a stated one overrides it
        (["bots=n", "/img/ search=y"], "/img/a", ("content_usage", "bots=n")),
        (["bots=n", "/img/ train-ai=y"], "/img/a", None),
        # a line that does not parse states nothing
        (["train-ai=n", "/img/ Train-AI=y"], "/img/a", ("content_usage", "train-ai=n")),
        (["train-ai=n", "/img/\ttrain-ai=y"], "/img/a", None),
    ],
)
def test_content_usage_keys_are_decided_separately(
    lines: list[str], url: str, expected: tuple[str, str] | None
) -> None:
    text = "User-agent: *\n" + "".join(f"Content-Usage: {line}\n" for line in lines)
    assert refusal(text, "https://s.example" + url) == expected


def test_keys_are_decided_per_group_too() -> None:
    text = (
        "User-agent: imagecrawl\nContent-Signal: ai-train=no\nContent-Signal: /pub/ search=yes\n\n"
        "User-agent: *\nContent-Signal: /pub/ ai-train=yes\n"
    )
    # our group refuses site-wide; the * group's /pub/ allowance is not ours
    assert refusal(text, "https://s.example/pub/a") == ("content_signal", "ai-train=no")
    assert refusal(text, "https://s.example/pub/a", token="otherbot") is None


def test_decide_keys_reports_the_deciding_line() -> None:
    prefs = parse_robots_prefs(
        "User-agent: *\nContent-Signal: ai-train=no, search=yes\nContent-Signal: /x/ search=no\n"
    )
    decided = decide_keys(prefs.lines_for("imagecrawl", "content-signal"), "/x/1")
    assert {key: (value, line.text) for key, (value, line) in decided.items()} == {
        "ai-train": ("no", "ai-train=no, search=yes"),
        "search": ("no", "/x/ search=no"),
    }


def test_lone_cr_ends_a_line() -> None:
    text = "User-agent: *\rContent-Signal: ai-train=no\rContent-Signal: /a/\tsearch=yes\r"
    assert refusal(text, "https://s.example/a/b") == ("content_signal", "ai-train=no")
