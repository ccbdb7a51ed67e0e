"""The one streaming-body writer of the sandbox: slow, chunked or endless bodies that stop as soon
as the client hangs up and tell the request log how many body bytes really left the server."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from typing import Final

from aiohttp import web

from tests.sandbox.config import BODY_BYTES_KEY

#: Opt-out test files: a pause after the headers, then the body in small chunks, so a client that hangs up
#: on the headers receives (almost) nothing of it.
FIRST_CHUNK_DELAY_SECONDS: Final = 0.25
CHUNK_BYTES: Final = 2048
CHUNK_DELAY_SECONDS: Final = 0.005

#: ``next_chunk(sent)`` -> the next chunk to write after ``sent`` body bytes, or ``None`` at the end.
ChunkSource = Callable[[int], bytes | None]


def client_gone(request: web.Request) -> bool:
    """True once the connection is closing (the client hung up, or a behaviour closed it)."""
    transport = request.transport
    return transport is None or transport.is_closing()


def chunks_of(body: bytes, size: int) -> ChunkSource:
    """``body`` in chunks of ``size`` bytes."""

    def next_chunk(sent: int) -> bytes | None:
        return body[sent : sent + size] if sent < len(body) else None

    return next_chunk


async def stream_body(
    request: web.Request,
    response: web.StreamResponse,
    next_chunk: ChunkSource,
    *,
    pause_seconds: float = 0.0,
    first_pause_seconds: float = 0.0,
) -> web.StreamResponse:
    """Send the headers of ``response``, wait ``first_pause_seconds``, then write the chunks of
    ``next_chunk`` with ``pause_seconds`` after each, until it returns ``None`` (end of body) or the
    client is gone. ``response[BODY_BYTES_KEY]`` is always the number of body bytes written."""
    response[BODY_BYTES_KEY] = 0
    await response.prepare(request)
    sent = 0
    try:
        if first_pause_seconds:
            await asyncio.sleep(first_pause_seconds)
        while not client_gone(request):
            chunk = next_chunk(sent)
            if chunk is None:
                await response.write_eof()
                break
            await response.write(chunk)
            sent += len(chunk)
            response[BODY_BYTES_KEY] = sent
            await asyncio.sleep(pause_seconds)
    except (ConnectionError, asyncio.CancelledError):
        pass
    response[BODY_BYTES_KEY] = sent
    return response


async def stream_file_slowly(request: web.Request, body: bytes, headers: Mapping[str, str]) -> web.StreamResponse:
    """``body`` with ``headers`` and its length, sent as opt-out test files are: headers, a pause, then
    :data:`CHUNK_BYTES` chunks (a crawler that decides on the headers reads less than one chunk)."""
    response = web.StreamResponse(headers=dict(headers))
    response.content_length = len(body)
    return await stream_body(
        request,
        response,
        chunks_of(body, CHUNK_BYTES),
        pause_seconds=CHUNK_DELAY_SECONDS,
        first_pause_seconds=FIRST_CHUNK_DELAY_SECONDS,
    )
