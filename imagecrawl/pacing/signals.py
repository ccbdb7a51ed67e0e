"""What a site's answer says about its load: HTTP statuses and download errors as pacing signals. Pure."""

from __future__ import annotations

from typing import Final

from imagecrawl.pacing.gate import Signal

GATEWAY_STATUSES: Final = frozenset({502, 504, 522, 524})
#: download errors (matched by class name anywhere in the exception's MRO) that mean "too slow"
TIMEOUT_EXCEPTIONS: Final = frozenset(
    {"DownloadTimeoutError", "TimeoutError", "TCPTimedOutError", "ResponseNeverReceived"}
)
#: download errors that mean "could not connect": what, with timeouts, counts towards a dead site
CONNECTION_EXCEPTIONS: Final = frozenset(
    {
        "DownloadConnectionRefusedError",
        "ConnectionRefusedError",
        "ConnectError",
        "DNSLookupError",
        "CannotResolveHostError",
        "NoRouteError",
    }
)
#: download errors after a connection was made (it broke, or the body was cut): congestion, but the site is
#: alive, so a few broken URLs in a row never cut a site off
BROKEN_EXCEPTIONS: Final = frozenset(
    {
        "ConnectionLost",
        "ConnectionDone",
        "DownloadFailedError",
        "ResponseDataLossError",
        "ConnectionResetError",
    }
)


def classify_status(status: int) -> Signal:
    if status == 429:
        return Signal.THROTTLED
    if status == 503:
        return Signal.UNAVAILABLE
    if status in GATEWAY_STATUSES:
        return Signal.GATEWAY
    if 200 <= status < 400:
        return Signal.OK
    return Signal.NEUTRAL


def classify_exception(exc: BaseException) -> Signal:
    names = {k.__name__ for k in type(exc).__mro__}
    if names & TIMEOUT_EXCEPTIONS:
        return Signal.TIMEOUT
    if names & CONNECTION_EXCEPTIONS:
        return Signal.CONNECTION
    if names & BROKEN_EXCEPTIONS:
        return Signal.BROKEN
    return Signal.NEUTRAL
