"""proxy.multipart: forms read in place and written back as slices of the body as sent."""

import asyncio
from typing import Any

import httpx
import pytest

from gateway.kernel.errors import GatewayError
from proxy.multipart import form_parse


def encoded(fields: dict[str, str], files: dict[str, tuple[str, bytes, str]]) -> tuple[bytes, str]:
    """A body and its Content-Type as httpx (the openai SDK's client) writes them."""
    request = httpx.Request("POST", "http://x/", data=fields, files=files)
    return request.read(), request.headers["Content-Type"]


class Writer:
    def __init__(self) -> None:
        self.chunks: list[bytes] = []

    async def write(self, chunk: Any) -> None:
        self.chunks.append(bytes(chunk))


def test_fields_and_files_are_found_without_copying_the_file() -> None:
    audio = bytes(range(256)) * 100 + b"\r\n--not-the-boundary\r\n"
    body, content_type = encoded({"model": "whisper", "language": "en"}, {"file": ("a.mp3", audio, "audio/mpeg")})

    form = form_parse(body, content_type)

    assert form.fields() == {"model": "whisper", "language": "en"}
    [file] = form.files("file")
    assert (file.filename, file.content_type, body[file.start : file.end]) == ("a.mp3", "audio/mpeg", audio)


def test_a_rewritten_form_changes_only_the_fields_given_and_keeps_its_length_honest() -> None:
    audio = b"\x00\xff" * 5000
    body, content_type = encoded({"model": "whisper"}, {"file": ("a.wav", audio, "audio/wav")})
    payload = form_parse(body, content_type).rewritten({"model": "whisper-1-upstream"})
    writer = Writer()

    asyncio.run(payload.write(writer))
    sent = b"".join(writer.chunks)

    assert payload.size == len(sent)
    again = form_parse(sent, payload.content_type)
    assert again.fields() == {"model": "whisper-1-upstream"}
    [file] = again.files("file")
    assert sent[file.start : file.end] == audio


@pytest.mark.parametrize(
    ("body", "content_type"),
    [
        (b'{"model": "whisper"}', "application/json"),
        (b"--b\r\n", "multipart/form-data"),  # no boundary parameter
        (b"nothing here", "multipart/form-data; boundary=b"),
        (b"--bX", "multipart/form-data; boundary=b"),
        (b"--b\r\nContent-Disposition: form-data; name=model\r\n", "multipart/form-data; boundary=b"),
        (b'--b\r\nContent-Disposition: form-data; name="model"\r\n\r\nwhisper', "multipart/form-data; boundary=b"),
        (b"--b\r\nContent-Type: text/plain\r\n\r\nx\r\n--b--\r\n", "multipart/form-data; boundary=b"),
    ],
)
def test_anything_that_is_not_a_whole_form_is_a_400(body: bytes, content_type: str) -> None:
    with pytest.raises(GatewayError) as caught:
        form_parse(body, content_type)
    assert (caught.value.status, caught.value.code) == (400, "invalid_request")
