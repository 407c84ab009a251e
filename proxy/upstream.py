"""One shared aiohttp session per event loop for every upstream call."""

import asyncio
import weakref

import aiohttp
from django.conf import settings

from gateway.kernel.errors import GatewayError

_sessions: "weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, aiohttp.ClientSession]" = weakref.WeakKeyDictionary()


def upstream_session() -> aiohttp.ClientSession:
    loop = asyncio.get_running_loop()
    session = _sessions.get(loop)
    if session is None or session.closed:
        session = aiohttp.ClientSession(
            # The default limit of 100 connections would queue the 101st stream.
            connector=aiohttp.TCPConnector(limit=0, ttl_dns_cache=300),
            # No total limit: a stream that keeps moving may run for minutes.
            # sock_read bounds both the wait for headers and each silence.
            timeout=aiohttp.ClientTimeout(
                total=None, sock_connect=settings.PROXY_CONNECT_TIMEOUT, sock_read=settings.PROXY_READ_TIMEOUT
            ),
            skip_auto_headers=("User-Agent",),
        )
        _sessions[loop] = session
    return session


async def upstream_sessions_close() -> None:
    for session in list(_sessions.values()):
        await session.close()


def upstream_failure(exc: BaseException, provider: str) -> GatewayError:
    """Map a transport failure to the client's error (no URLs or secrets)."""
    if isinstance(exc, (asyncio.TimeoutError, aiohttp.ServerTimeoutError)):
        return GatewayError(
            504, "upstream_timeout", f"The provider '{provider}' did not answer in time.", retryable=True
        )
    return GatewayError(502, "upstream_unreachable", f"The provider '{provider}' could not be reached.", retryable=True)


class UpstreamTooLargeError(GatewayError):
    """The upstream's answer is larger than PROXY_MAX_RESPONSE_BYTES."""


def too_large(provider: str, limit: int) -> UpstreamTooLargeError:
    return UpstreamTooLargeError(
        502,
        "upstream_response_too_large",
        f"The answer of the provider '{provider}' is larger than the gateway's limit of {limit} bytes.",
    )


async def read_bounded(response: aiohttp.ClientResponse, provider: str, limit: int | None = None) -> bytes:
    """The whole body, refused (UpstreamTooLargeError) once it is larger than
    `limit` (default PROXY_MAX_RESPONSE_BYTES): a declared length is checked
    before anything is read, the rest as it arrives, so an oversized answer
    is never held whole. The caller releases or closes the response."""
    limit = settings.PROXY_MAX_RESPONSE_BYTES if limit is None else limit
    declared = response.content_length
    if declared is not None and declared > limit:
        raise too_large(provider, limit)
    chunks: list[bytes] = []
    size = 0
    async for chunk in response.content.iter_any():
        size += len(chunk)
        if size > limit:
            raise too_large(provider, limit)
        chunks.append(chunk)
    return b"".join(chunks)
