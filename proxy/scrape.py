"""Fetching a web page as text for augmentation (proxy.augment), without
becoming a way into the gateway's own network.

A URL a designator names comes from a model that read a client's prompt, so
it is the client's choice: a server-side request forgery risk. Hence:

- only http and https, and no URL that carries credentials;
- the host is resolved here, once, and every address it resolves to must be
  public (not private, loopback, link-local, shared, reserved, multicast or
  unspecified: which covers 169.254.169.254 and the other cloud metadata
  endpoints). The connection then goes to exactly those addresses (a resolver
  pinned to them), so a DNS answer that changes between the check and the
  connection (a rebind) cannot slip through;
- redirects are followed here, each hop checked the same way, at most
  AUGMENT_SCRAPE_MAX_REDIRECTS;
- at most AUGMENT_SCRAPE_MAX_BYTES are read, within
  AUGMENT_SCRAPE_TIMEOUT_SECONDS for the whole fetch, redirects included;
- only HTML and plain text are read.

AUGMENT_SCRAPE_ALLOW_PRIVATE=true lifts the address rule (labs, and tests on
127.0.0.1); the other rules stay.

HTML becomes text with selectolax (lexbor): a C parser with no further
dependencies, fast enough to run on the request path, that copes with the
broken markup of real pages. Scripts, styles and page furniture (navigation,
headers, footers, forms) are dropped; block elements become lines.
"""

import asyncio
import ipaddress
import re
import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult
from django.conf import settings
from selectolax.lexbor import LexborHTMLParser
from yarl import URL

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
# (host, port) -> the addresses it resolves to, as getaddrinfo gives them
Resolve = Callable[[str, int], Awaitable[list[IPAddress]]]

_TEXT_TYPES = ("text/html", "application/xhtml+xml", "text/plain")
_DROPPED = "script, style, noscript, template, svg, iframe, nav, header, footer, form, aside"
_BLOCKS = "p, div, br, li, tr, h1, h2, h3, h4, h5, h6, pre, blockquote, section, article, dd, dt"
_SPACES = re.compile(r"[ \t\n\r\f\v\u00a0]+")  # in HTML, a line break in the source is a space
_BREAK = "\u2029"  # marks the end of a block element (not whitespace to _SPACES)
_USER_AGENT = "llm-gateway-augment/1.0"
_PARSE_INLINE_BYTES = 64 * 1024


class ScrapeError(Exception):
    """A page that could not be fetched or read (retrying will not help)."""


class ScrapeRefusedError(ScrapeError):
    """A URL the gateway will not fetch: its scheme, or an address it resolves to."""


@dataclass(frozen=True, slots=True)
class Page:
    url: str  # where the text came from, after redirects
    title: str
    text: str


def address_public(address: IPAddress) -> bool:
    """Whether `address` is on the public internet. An IPv4 address mapped
    into IPv6 (::ffff:10.0.0.1) is judged as the IPv4 address it carries."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return address.is_global and not (address.is_multicast or address.is_reserved or address.is_unspecified)


async def system_resolve(host: str, port: int) -> list[IPAddress]:
    """The addresses the system's resolver gives for `host`."""
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return [ipaddress.ip_address(info[4][0]) for info in infos]


async def scrape(
    url: str,
    *,
    allow_private: bool | None = None,
    resolve: Resolve = system_resolve,
    public: Callable[[IPAddress], bool] = address_public,
) -> Page:
    """The text of the page at `url` (ScrapeRefusedError, ScrapeError).
    `resolve` and `public` are the DNS lookup and the address rule (tests
    pass their own); `allow_private` None: AUGMENT_SCRAPE_ALLOW_PRIVATE."""
    allow = settings.AUGMENT_SCRAPE_ALLOW_PRIVATE if allow_private is None else allow_private
    pinned = _PinnedResolver()
    connector = aiohttp.TCPConnector(resolver=pinned, use_dns_cache=False, limit=4)
    try:
        async with (
            asyncio.timeout(settings.AUGMENT_SCRAPE_TIMEOUT_SECONDS),
            aiohttp.ClientSession(connector=connector, auto_decompress=True) as session,
        ):
            return await _follow(session, pinned, URL(url), allow, resolve, public)
    except TimeoutError:
        raise ScrapeError(f"no answer within {settings.AUGMENT_SCRAPE_TIMEOUT_SECONDS}s") from None
    except aiohttp.ClientError as exc:
        raise ScrapeError(f"could not be fetched ({type(exc).__name__})") from None
    except ValueError as exc:  # a URL yarl or aiohttp cannot use
        raise ScrapeRefusedError(f"not a usable URL ({exc})") from None


async def _follow(
    session: aiohttp.ClientSession,
    pinned: "_PinnedResolver",
    url: URL,
    allow: bool,
    resolve: Resolve,
    public: Callable[[IPAddress], bool],
) -> Page:
    for _ in range(settings.AUGMENT_SCRAPE_MAX_REDIRECTS + 1):
        await _admit(url, pinned, allow, resolve, public)
        headers = {"User-Agent": _USER_AGENT, "Accept": "text/html, text/plain;q=0.9"}
        async with session.get(url, allow_redirects=False, headers=headers) as response:
            location = response.headers.get("Location")
            if response.status in (301, 302, 303, 307, 308) and location:
                url = response.url.join(URL(location))
                continue
            if response.status != 200:
                raise ScrapeError(f"answered HTTP {response.status}")
            return await _page(response)
    raise ScrapeError(f"more than {settings.AUGMENT_SCRAPE_MAX_REDIRECTS} redirects")


async def _admit(
    url: URL, pinned: "_PinnedResolver", allow: bool, resolve: Resolve, public: Callable[[IPAddress], bool]
) -> None:
    """Refuse `url` unless it may be fetched; pin its host to the addresses checked."""
    if url.scheme not in ("http", "https"):
        raise ScrapeRefusedError(f"only http and https URLs are fetched, not {url.scheme or 'a relative URL'}")
    host, port = url.raw_host, url.port
    if not host or port is None:
        raise ScrapeRefusedError("the URL has no host")
    if url.user is not None or url.password is not None:
        raise ScrapeRefusedError("URLs with credentials are not fetched")
    try:
        addresses = [ipaddress.ip_address(host.strip("[]"))]
    except ValueError:
        try:
            addresses = await resolve(host, port)
        except OSError:
            raise ScrapeError(f"the host {host} does not resolve") from None
    if not addresses:
        raise ScrapeError(f"the host {host} does not resolve")
    if not allow:
        for address in addresses:
            if not public(address):
                raise ScrapeRefusedError(f"{host} resolves to {address}, which is not a public address")
    pinned.pin(host, port, addresses)


async def _page(response: aiohttp.ClientResponse) -> Page:
    content_type = response.content_type
    if content_type not in _TEXT_TYPES:
        raise ScrapeError(f"is {content_type or 'of no type'}, not a page")
    limit = settings.AUGMENT_SCRAPE_MAX_BYTES
    raw = bytearray()
    while len(raw) < limit:  # past the cap, the rest is never read
        chunk = await response.content.read(min(65536, limit - len(raw)))
        if not chunk:
            break
        raw += chunk
    text = bytes(raw).decode(response.charset or "utf-8", errors="replace")
    if content_type == "text/plain":
        return Page(str(response.url), "", _lines(text))
    # Parsing costs about 80 ms a MiB (measured): a large page is parsed in a
    # thread, so the event loop keeps serving other requests meanwhile.
    title, body = await asyncio.to_thread(html_text, text) if len(raw) > _PARSE_INLINE_BYTES else html_text(text)
    return Page(str(response.url), title, body)


def html_text(html: str) -> tuple[str, str]:
    """A page's title and readable text: one line per block element."""
    tree = LexborHTMLParser(html)
    title_node = tree.css_first("title")
    title = _SPACES.sub(" ", title_node.text()).strip() if title_node is not None else ""
    for node in tree.css(_DROPPED):
        node.decompose()
    root = tree.body or tree.root
    if root is None:
        return title, ""
    for node in root.css(_BLOCKS):
        node.insert_after(_BREAK)
    return title, _lines(root.text(separator=""), _BREAK)


def _lines(text: str, breaks: str = "\n") -> str:
    """One line per piece of `text` between `breaks`, blank ones dropped."""
    lines = (_SPACES.sub(" ", line).strip() for line in text.split(breaks))
    return "\n".join(line for line in lines if line)


class _PinnedResolver(AbstractResolver):
    """aiohttp's resolver for one scrape: it answers only with the addresses
    `_admit` checked for a host, and never asks DNS itself."""

    def __init__(self) -> None:
        self._pins: dict[tuple[str, int], list[IPAddress]] = {}

    def pin(self, host: str, port: int, addresses: list[IPAddress]) -> None:
        self._pins[(host, port)] = addresses

    async def resolve(self, host: str, port: int = 0, family: Any = socket.AF_INET) -> list[ResolveResult]:
        addresses = self._pins.get((host, port))
        if addresses is None:  # never happens: every hop is admitted first
            raise OSError(f"{host} was not checked before connecting")
        return [
            ResolveResult(
                hostname=host,
                host=str(address),
                port=port,
                family=socket.AF_INET6 if address.version == 6 else socket.AF_INET,
                proto=0,
                flags=socket.AI_NUMERICHOST,
            )
            for address in addresses
        ]

    async def close(self) -> None:
        return None
