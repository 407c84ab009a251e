"""Scraping (proxy.scrape): pages as text, and no way into the gateway's network.

Every test here sends traffic to loopback only: the refused addresses (10.x,
169.254.169.254...) are refused before any connection is opened, which the
tests show by a resolver or server that would notice being asked.
"""

import ipaddress
import time
from collections.abc import Iterator
from typing import Any

import pytest

from proxy.scrape import IPAddress, ScrapeError, ScrapeRefusedError, address_public, html_text, scrape
from proxy.tests.fake_web import FakeWeb
from proxy.upstream import upstream_sessions_close


@pytest.fixture(scope="module")
def web() -> Iterator[FakeWeb]:
    fake = FakeWeb().start_in_thread()
    yield fake
    fake.stop()


@pytest.fixture(scope="module")
def public_web() -> Iterator[FakeWeb]:
    """A server on 127.0.0.2, which the redirect test treats as a public address."""
    fake = FakeWeb(host="127.0.0.2").start_in_thread()
    yield fake
    fake.stop()


@pytest.fixture(autouse=True)
async def sessions() -> Any:
    yield
    await upstream_sessions_close()


class Resolver:
    """A DNS that answers from a table and remembers what it was asked."""

    def __init__(self, table: dict[str, list[str]]) -> None:
        self.table = table
        self.asked: list[str] = []

    async def __call__(self, host: str, port: int) -> list[IPAddress]:
        self.asked.append(host)
        if host not in self.table:
            raise OSError("no such host")
        return [ipaddress.ip_address(a) for a in self.table[host]]


async def test_a_page_is_read_as_its_text(web: FakeWeb) -> None:
    url = web.page("hello", "<title>Hi</title><script>x()</script><h1>Hello</h1><p>There <i>you</i>.</p>")
    page = await scrape(url, allow_private=True)
    assert (page.url, page.title, page.text) == (url, "Hi", "Hello\nThere you.")


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:{port}/page/secret",
        "http://localhost:{port}/page/secret",
        "http://[::1]:{port}/page/secret",
        "http://[::ffff:127.0.0.1]:{port}/page/secret",
        "http://0.0.0.0:{port}/page/secret",
    ],
    ids=["ipv4-loopback", "localhost", "ipv6-loopback", "ipv4-mapped", "unspecified"],
)
async def test_loopback_is_refused_without_the_setting_and_nothing_is_fetched(web: FakeWeb, url: str) -> None:
    web.page("secret", "<p>internal</p>")
    before = len(web.seen("/page/secret"))
    with pytest.raises(ScrapeRefusedError, match="not a public address"):
        await scrape(url.format(port=web.port), allow_private=False)
    assert len(web.seen("/page/secret")) == before


@pytest.mark.parametrize(
    "url",
    [
        "http://10.0.0.1/",
        "http://192.168.1.1/",
        "http://172.16.0.5/",
        "http://169.254.169.254/latest/meta-data/",
        "http://100.100.100.200/latest/meta-data/",  # Alibaba's metadata, in the shared 100.64/10 range
        "http://[fd00:ec2::254]/latest/meta-data/",  # AWS's IPv6 metadata
        "http://[fe80::1]/",
    ],
)
async def test_private_link_local_and_metadata_addresses_are_refused_before_connecting(url: str) -> None:
    started = time.monotonic()
    with pytest.raises(ScrapeRefusedError, match="not a public address"):
        await scrape(url, allow_private=False)
    assert time.monotonic() - started < 1  # no connection was tried (a blackholed 10.x would hang)


async def test_a_host_is_judged_by_the_addresses_it_resolves_to() -> None:
    dns = Resolver({"intranet.example": ["93.184.216.34", "10.1.2.3"], "metadata.example": ["169.254.169.254"]})
    for host in ("intranet.example", "metadata.example"):
        with pytest.raises(ScrapeRefusedError, match=f"{host} resolves to"):
            await scrape(f"https://{host}/", allow_private=False, resolve=dns)
    assert dns.asked == ["intranet.example", "metadata.example"]


async def test_the_connection_goes_to_the_address_that_was_checked_so_a_rebind_cannot_slip_through(
    web: FakeWeb,
) -> None:
    # The name resolves once, to loopback (allowed here); a second lookup at
    # connect time would fail, since the table has nothing more to give.
    dns = Resolver({"pages.example": ["127.0.0.1"]})
    url = web.page("pinned", "<p>pinned</p>").replace("127.0.0.1", "pages.example")
    page = await scrape(url, allow_private=True, resolve=dns)
    assert page.text == "pinned" and dns.asked == ["pages.example"]
    assert web.seen("/page/pinned")[-1].headers["Host"] == f"pages.example:{web.port}"


async def test_a_redirect_is_checked_like_the_first_url(web: FakeWeb, public_web: FakeWeb) -> None:
    web.page("inside", "<p>internal</p>")
    inside = f"http://127.0.0.1:{web.port}/page/inside"
    # 127.0.0.2 stands for a public server here; every other address is judged by the real rule.
    public = lambda address: str(address) == "127.0.0.2" or address_public(address)  # noqa: E731
    redirect = f"{public_web.url}/redirect?to={inside}"

    with pytest.raises(ScrapeRefusedError, match="127.0.0.1, which is not a public address"):
        await scrape(redirect, allow_private=False, public=public)

    assert public_web.seen("/redirect") and not web.seen("/page/inside")
    public_web.page("outside", "<p>public words</p>")
    followed = await scrape(f"{public_web.url}/redirect?to=/page/outside", allow_private=False, public=public)
    assert (followed.url, followed.text) == (f"{public_web.url}/page/outside", "public words")


async def test_redirects_are_followed_only_so_far(web: FakeWeb, settings: Any) -> None:
    settings.AUGMENT_SCRAPE_MAX_REDIRECTS = 2
    web.page("end", "<p>end</p>")
    url = f"{web.url}/page/end"
    for _ in range(3):
        url = f"{web.url}/redirect?to={url.replace('&', '%26').replace('?', '%3F')}"
    with pytest.raises(ScrapeError, match="more than 2 redirects"):
        await scrape(url, allow_private=True)


@pytest.mark.parametrize(
    "url", ["ftp://files.example/x", "file:///etc/passwd", "gopher://g.example/", "http://user:pw@a.example/"]
)
async def test_only_http_and_https_without_credentials_are_fetched(url: str) -> None:
    with pytest.raises(ScrapeRefusedError):
        await scrape(url, allow_private=True)


@pytest.mark.parametrize("cap", [10_000, 300_000], ids=["parsed-inline", "parsed-in-a-thread"])
async def test_a_large_page_is_read_only_up_to_the_cap(web: FakeWeb, settings: Any, cap: int) -> None:
    settings.AUGMENT_SCRAPE_MAX_BYTES = cap
    page = await scrape(f"{web.url}/big", allow_private=True)
    assert page.text.startswith("big big") and cap - 100 < len(page.text) <= cap


async def test_a_slow_page_is_given_up_after_the_time_cap(web: FakeWeb, settings: Any) -> None:
    settings.AUGMENT_SCRAPE_TIMEOUT_SECONDS = 0.3
    started = time.monotonic()
    with pytest.raises(ScrapeError, match="no answer within 0.3s"):
        await scrape(f"{web.url}/slow", allow_private=True)
    assert time.monotonic() - started < 2


async def test_only_pages_are_read_not_other_content(web: FakeWeb) -> None:
    url = web.page("image", "PNG...", content_type="image/png")
    with pytest.raises(ScrapeError, match="image/png, not a page"):
        await scrape(url, allow_private=True)
    text = await scrape(web.page("plain", "line one\n\n  line   two ", content_type="text/plain"), allow_private=True)
    assert text.text == "line one\nline two"


async def test_the_setting_decides_when_the_caller_does_not(web: FakeWeb, settings: Any) -> None:
    url = web.page("setting", "<p>lab</p>")
    settings.AUGMENT_SCRAPE_ALLOW_PRIVATE = False
    with pytest.raises(ScrapeRefusedError):
        await scrape(url)
    settings.AUGMENT_SCRAPE_ALLOW_PRIVATE = True
    assert (await scrape(url)).text == "lab"


def test_html_becomes_one_line_per_block_without_scripts_styles_or_navigation() -> None:
    html = """<html><head><title> A  page </title><style>b{}</style></head><body>
    <nav><a href="/">Home</a></nav><header>Site</header>
    <main><h2>Heading</h2><p>First   <b>bold</b>
    paragraph.</p><ul><li>one</li><li>two</li></ul><table><tr><td>a</td><td>b</td></tr></table></main>
    <script>alert(1)</script><footer>foot</footer></body></html>"""
    assert html_text(html) == ("A page", "Heading\nFirst bold paragraph.\none\ntwo\nab")


@pytest.mark.parametrize(
    ("address", "public"),
    [
        ("8.8.8.8", True),
        ("2606:4700::1111", True),
        ("127.0.0.1", False),
        ("10.255.0.1", False),
        ("169.254.169.254", False),
        ("100.64.0.1", False),
        ("224.0.0.1", False),
        ("::", False),
        ("::ffff:10.0.0.1", False),
        ("::ffff:8.8.8.8", True),
    ],
)
def test_only_public_internet_addresses_count_as_public(address: str, public: bool) -> None:
    assert address_public(ipaddress.ip_address(address)) is public
