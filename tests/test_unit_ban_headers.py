"""The ban middleware reads a response's headers through ResponseHeaders: case-insensitive names, latin-1
values, decoded when asked, and the verdicts classify_response gives for them."""

from __future__ import annotations

from scrapy.http import Headers

from imagecrawl.pacing import Verdict
from imagecrawl.pacing.downloadermiddlewares.bans import ResponseHeaders, classify_response


def test_headers_are_read_by_lower_case_name_when_asked() -> None:
    raw = Headers({"CF-Mitigated": "Challenge", "X-Empty": "", "Server": "nginx\xe9".encode("latin-1")})
    view = ResponseHeaders(raw)
    assert view.get("cf-mitigated") == "Challenge" and view["server"] == "nginx\xe9"
    assert view.get("x-empty") == "" and view.get("retry-after") is None and "retry-after" not in view
    assert sorted(view) == ["cf-mitigated", "server", "x-empty"] and len(view) == 3
    assert dict(view) == {"cf-mitigated": "Challenge", "server": "nginx\xe9", "x-empty": ""}


def test_verdicts_from_real_headers() -> None:
    challenge = ResponseHeaders(Headers({"Cf-Mitigated": " challenge "}))
    assert classify_response(200, challenge, None, (), None) is Verdict.CHALLENGE
    plain = ResponseHeaders(Headers({"Content-Type": "image/png"}))
    assert classify_response(200, plain, None, (), None) is Verdict.HEALTHY
    assert classify_response(429, plain, None, (), None) is Verdict.STATUS_429
