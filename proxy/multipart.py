"""multipart/form-data read in place, and written back out without a copy.

The body is already in memory once (gateway.handlers reads it whole, within
PROXY_MAX_BODY_BYTES). Django's parser would copy every file into an
upload object; here a part is only its offsets in that body, and the
upstream's body is a list of slices of it (plus the few text fields the
gateway rewrites, such as `model`), written to the socket one by one.
"""

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from aiohttp import payload

from gateway.kernel.errors import invalid_request

_BOUNDARY = re.compile(r'boundary=(?:"([^"]+)"|([^;\s]+))', re.IGNORECASE)
_PARAM = re.compile(r';\s*(name|filename)="((?:[^"\\]|\\.)*)"', re.IGNORECASE)
_HEADERS_MAX = 16 * 1024  # one part's headers: a name, a file name, a type


@dataclass(frozen=True, slots=True)
class Part:
    name: str
    filename: str | None  # None: a text field
    content_type: str
    head: int  # where the part's headers start in the body
    start: int  # where its content starts
    end: int  # where its content ends (before the next boundary)

    def text(self, body: bytes) -> str:
        return body[self.start : self.end].decode("utf-8", "replace")


@dataclass(frozen=True, slots=True)
class Form:
    body: bytes
    boundary: bytes
    parts: tuple[Part, ...]

    def fields(self) -> dict[str, str]:
        """The text fields, each name's first value (`name[]` arrays keep theirs in the parts)."""
        found: dict[str, str] = {}
        for part in self.parts:
            if part.filename is None:
                found.setdefault(part.name, part.text(self.body))
        return found

    def files(self, *names: str) -> list[Part]:
        return [p for p in self.parts if p.filename is not None and p.name in names]

    def rewritten(self, values: Mapping[str, str]) -> "SlicesPayload":
        """The same form with the text fields in `values` given those values
        (their first occurrence), everything else sliced from the body as sent."""
        view = memoryview(self.body)
        delimiter = b"--" + self.boundary + b"\r\n"
        slices: list[bytes | memoryview] = []
        done: set[str] = set()
        for part in self.parts:
            slices += [delimiter, view[part.head : part.start]]
            if part.filename is None and part.name in values and part.name not in done:
                done.add(part.name)
                slices.append(values[part.name].encode())
            else:
                slices.append(view[part.start : part.end])
            slices.append(b"\r\n")
        slices.append(b"--" + self.boundary + b"--\r\n")
        return SlicesPayload(slices, content_type=f"multipart/form-data; boundary={self.boundary.decode()}")


def form_parse(body: bytes, content_type: str) -> Form:
    """The parts of a multipart/form-data body; raises invalid_request (400)
    when it is not one."""
    match = _BOUNDARY.search(content_type or "")
    if not (content_type or "").lower().startswith("multipart/form-data") or match is None:
        raise invalid_request("The request body must be multipart/form-data (a file upload).")
    boundary = (match.group(1) or match.group(2)).encode("latin-1")
    delimiter = b"--" + boundary
    pos = body.find(delimiter)
    if pos < 0:
        raise invalid_request("The multipart body has no part with its boundary.")
    parts: list[Part] = []
    while True:
        pos += len(delimiter)
        if body[pos : pos + 2] == b"--":
            break
        if body[pos : pos + 2] != b"\r\n":
            raise invalid_request("The multipart body is malformed: a boundary is not followed by a line break.")
        head = pos + 2
        head_end = body.find(b"\r\n\r\n", head, head + _HEADERS_MAX)
        if head_end < 0:
            raise invalid_request("The multipart body is malformed: a part's headers do not end.")
        following = body.find(b"\r\n" + delimiter, head_end + 4)
        if following < 0:
            raise invalid_request("The multipart body is cut short: its closing boundary is missing.")
        parts.append(_part(body[head:head_end], head, head_end + 4, following))
        pos = following + 2
    return Form(body, boundary, tuple(parts))


def _part(headers: bytes, head: int, start: int, end: int) -> Part:
    name, filename, content_type = None, None, "text/plain"
    for line in headers.decode("utf-8", "replace").split("\r\n"):
        key, _, value = line.partition(":")
        if key.strip().lower() == "content-disposition":
            params = {k.lower(): v.replace('\\"', '"') for k, v in _PARAM.findall(value)}
            name, filename = params.get("name"), params.get("filename")
        elif key.strip().lower() == "content-type":
            content_type = value.strip()
    if name is None:
        raise invalid_request("The multipart body is malformed: a part has no form field name.")
    return Part(name, filename, content_type, head, start, end)


class SlicesPayload(payload.Payload):
    """An aiohttp request body written slice by slice (its length known, so
    it is sent with a Content-Length, not chunked)."""

    def __init__(self, slices: list[bytes | memoryview], content_type: str) -> None:
        super().__init__(slices, content_type=content_type)
        self._slices = slices
        self._size = sum(len(s) for s in slices)

    def decode(self, encoding: str = "utf-8", errors: str = "strict") -> str:
        return b"".join(self._slices).decode(encoding, errors)

    async def write(self, writer: Any) -> None:
        for piece in self._slices:
            await writer.write(piece)

    async def write_with_length(self, writer: Any, content_length: int | None) -> None:
        await self.write(writer)  # the length is the slices' own
