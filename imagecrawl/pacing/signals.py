"""What a site's answer says about its load: HTTP statuses and download errors as pacing signals. Pure."""

from __future__ import annotations

from typing import Final

from imagecrawl.pacing.gate import Signal

GATEWAY_STATUSES: Final = frozenset({502, 504, 522, 524})
#: download errors (matched by class name anywhere in the exception's MRO) that mean "too slow"
TIMEOUT_EXCEPTIONS: Final = frozenset(
    {"DownloadTimeoutError", "TimeoutError", "TCPTimedOutError", "ResponseNeverReceived"}
)
#: download errors that mean "could not connect / the connection broke"
CONNECTION_EXCEPTIONS: Final = frozenset(
    {
        "DownloadConnectionRefusedError",
        "ConnectionRefusedError",
        "ConnectError",
        "ConnectionLost",
        "ConnectionDone",
        "DownloadFailedError",
        "ResponseDataLossError",
        "ConnectionResetError",
        "DNSLookupError",
        "CannotResolveHostError",
        "NoRouteError",
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
    return Signal.NEUTRAL
