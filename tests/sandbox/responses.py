"""aiohttp response helpers shared by the fake sites."""

from __future__ import annotations

from aiohttp import web


def html_response(doc: str, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    """``doc`` as ``text/html; charset=utf-8`` (a lone surrogate, from ``--overrides``, is sent as the
    invalid UTF-8 bytes a broken page holds)."""
    body = doc.encode("utf-8", "surrogatepass")
    return web.Response(body=body, content_type="text/html", charset="utf-8", status=status, headers=headers)


def json_error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)


def base_url(request: web.Request) -> str:
    """``http://host:port`` as the client addressed us (Host header; else the local socket address)."""
    host = request.headers.get("Host")
    if not host:
        sockname = request.transport.get_extra_info("sockname") if request.transport else None
        if isinstance(sockname, tuple) and len(sockname) >= 2:
            addr = f"[{sockname[0]}]" if ":" in str(sockname[0]) else str(sockname[0])
            host = f"{addr}:{sockname[1]}"
        else:
            host = request.host
    return f"{request.scheme}://{host}"
