"""The media endpoints through the official openai SDK, the gateway (uvicorn and daphne) and a fake
provider of OpenAI's audio and image APIs (proxy.tests.fake_media).

What is checked is what a user would: what the client got, what the provider got (its own
credential, never the client's key; the upstream model name; the file bytes intact) and the
usage rows, their cost exact to the nano-dollar.
"""

import struct
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import httpx
import openai
import pytest

from conftest import IssuedKey, Ledger
from proxy.tests.fake_media import (
    IMAGE_TOKENS_MODEL,
    SPEECH_CHUNKS,
    TOKENS_MODEL,
    TRANSCRIPT,
    FakeMedia,
)
from proxy.tests.live import LiveGateway

MEDIA_SECRET = "sk-media-provider-secret"
AZURE_SECRET = "azure-media-provider-secret"
AUDIO = b"ID3\x03" + bytes(range(256)) * 64 + b"\x00\xff" * 1000  # an "mp3": no header the gateway reads
# USD per unit, LiteLLM's list prices: whisper-1, tts-1, dall-e-3 at its sizes, gpt-image-1's tokens.
PER_SECOND, PER_CHARACTER = Decimal("0.0001"), Decimal("0.000015")
DALLE = {"standard/1024-x-1024": "0.04", "hd/1024-x-1024": "0.08", "hd/1024-x-1792": "0.12"}


def wav(seconds: float, rate: int = 16_000) -> bytes:
    """A mono 16-bit PCM WAV file of silence."""
    data = b"\x00\x00" * int(rate * seconds)
    fmt = struct.pack("<HHIIHH", 1, 1, rate, rate * 2, 2, 16)
    body = b"WAVE" + b"fmt " + struct.pack("<I", len(fmt)) + fmt + b"data" + struct.pack("<I", len(data)) + data
    return b"RIFF" + struct.pack("<I", len(body)) + body


@pytest.fixture(scope="module")
def fake_media() -> Iterator[FakeMedia]:
    fake = FakeMedia().start_in_thread()
    yield fake
    fake.stop()


@pytest.fixture(scope="module")
def media_config(django_db_setup: None, django_db_blocker: Any, fake_media: FakeMedia) -> dict[str, int]:
    """Routes and prices; returns the price row ids of the dall-e sizes."""
    from billing.services import price_set
    from proxy.services import provider_upsert, route_upsert

    with django_db_blocker.unblock():
        media, _ = provider_upsert(
            name="fake-media", kind="openai", base_url=fake_media.url + "/v1", api_key=MEDIA_SECRET
        )
        for public, upstream in (
            ("whisper", "whisper-1-up"),
            ("transcribe", TOKENS_MODEL),
            ("tts", "tts-1-up"),
            ("tts-tokens", "gpt-4o-mini-tts-up"),
            ("dalle", "dall-e-3-up"),
            ("image-tokens", IMAGE_TOKENS_MODEL),
            ("media-error", "error-400"),
        ):
            route_upsert(model=public, provider=media, upstream_model=upstream)
        route_upsert(model="fake-media/*", provider=media)  # a wildcard: the rest of the name is the upstream model
        azure, _ = provider_upsert(
            name="fake-media-azure", kind="azure", base_url=fake_media.url + "/openai", api_key=AZURE_SECRET
        )
        route_upsert(model="whisper-azure", provider=azure, upstream_model="my-whisper-deployment")
        zero = {"input_usd": Decimal(0), "output_usd": Decimal(0)}
        price_set(model="whisper-1-up", **zero, input_usd_per_second=PER_SECOND)
        price_set(model="my-whisper-deployment", **zero, input_usd_per_second=PER_SECOND)
        price_set(model="error-400", **zero, input_usd_per_second=PER_SECOND, input_usd_per_character=PER_CHARACTER)
        price_set(
            model=TOKENS_MODEL, input_usd=Decimal("2.5"), output_usd=Decimal("10"), audio_input_usd_per_mtok=Decimal(6)
        )
        price_set(model="tts-1-up", **zero, input_usd_per_character=PER_CHARACTER)
        price_set(
            model="gpt-4o-mini-tts-up",
            input_usd=Decimal("2.5"),
            output_usd=Decimal(10),
            audio_output_usd_per_mtok=Decimal(12),
        )
        ids = {}
        for variant, usd in DALLE.items():
            row, _ = price_set(model=f"{variant}/dall-e-3-up", **zero, output_usd_per_image=Decimal(usd))
            ids[variant] = row.pk
        price_set(
            model=IMAGE_TOKENS_MODEL,
            input_usd=Decimal(5),
            output_usd=Decimal(10),
            image_input_usd_per_mtok=Decimal(10),
            image_output_usd_per_mtok=Decimal(40),
        )
        # A per-image price too (LiteLLM has both): reported tokens win, never both.
        price_set(model=f"high/1024-x-1024/{IMAGE_TOKENS_MODEL}", **zero, output_usd_per_image=Decimal("0.167"))
    return ids


@pytest.fixture(scope="module")
def guarded(django_db_setup: None, django_db_blocker: Any) -> Iterator[dict[str, IssuedKey]]:
    """Keys whose tenants have a guardrail, made before the gateway starts so
    that its first catalog has them: "redact" (pii, input) and "block" (secrets, input)."""
    import uuid

    from accounts.services import api_key_issue, tenant_create
    from proxy.guardrails.services import guardrail_upsert, guardrails_attach

    keys, rails = {}, []
    with django_db_blocker.unblock():
        for name, kind, action in (("redact", "pii", "redact"), ("block", "secrets", "block")):
            tenant = tenant_create(slug=f"media-{name}-{uuid.uuid4().hex[:8]}")
            plaintext, api_key = api_key_issue(tenant=tenant, name="media")
            rail, _, _ = guardrail_upsert(
                name=f"media-{name}-{uuid.uuid4().hex[:8]}", kind=kind, action=action, stage="input"
            )
            guardrails_attach([rail], tenant=tenant)
            keys[name] = IssuedKey(plaintext=plaintext, key_id=api_key.pk, tenant_id=tenant.pk)
            rails.append(rail)
    yield keys
    with django_db_blocker.unblock():  # other modules list every guardrail: leave none behind
        for rail in rails:
            rail.delete()


@pytest.fixture(scope="module", params=["uvicorn", "daphne"])
def gateway(
    request: pytest.FixtureRequest, media_config: dict[str, int], guarded: dict[str, IssuedKey]
) -> Iterator[LiveGateway]:
    """The gateway under uvicorn (the production server) and under daphne."""
    live = LiveGateway(server=request.param).start()
    yield live
    live.terminate()


def client_for(gateway: LiveGateway, key: IssuedKey) -> openai.OpenAI:
    return openai.OpenAI(base_url=gateway.url + "/v1", api_key=key.plaintext, max_retries=0, timeout=20)


def assert_provider_credential(headers: dict[str, str], key: IssuedKey) -> None:
    assert headers["Authorization"] == f"Bearer {MEDIA_SECRET}"
    assert key.plaintext not in str(headers)


def nanos(usd: Decimal) -> int:
    return int(usd * 10**9)


# --- transcriptions and translations -------------------------------------------------------


def test_a_transcription_reaches_the_provider_with_its_credential_and_the_file_intact_and_is_billed_per_second(
    gateway: LiveGateway, key: IssuedKey, fake_media: FakeMedia, ledger: Ledger
) -> None:
    answer = client_for(gateway, key).audio.transcriptions.create(
        model="whisper", file=("speech.mp3", AUDIO, "audio/mpeg"), language="en", prompt="A fox."
    )
    assert answer.text == TRANSCRIPT
    got = fake_media.last("/v1/audio/transcriptions")
    assert_provider_credential(got.headers, key)
    assert got.files["file"] == [AUDIO]  # byte for byte
    assert got.filenames["file"] == ["speech.mp3"]
    assert (got.fields["model"], got.fields["language"], got.fields["prompt"]) == ("whisper-1-up", "en", "A fox.")
    [row] = ledger.wait(key.key_id, 1)
    assert (row.endpoint, row.public_model, row.upstream_model, row.status_code) == (
        "audio.transcriptions",
        "whisper",
        "whisper-1-up",
        200,
    )
    assert row.audio_input_ms == 9000  # whisper's own usage: 9 seconds
    assert row.cost_nanos == 9 * nanos(PER_SECOND)


def test_verbose_json_is_billed_for_the_duration_it_reports_to_the_millisecond(
    gateway: LiveGateway, key: IssuedKey, ledger: Ledger
) -> None:
    answer = client_for(gateway, key).audio.transcriptions.create(
        model="whisper", file=("speech.mp3", AUDIO), response_format="verbose_json"
    )
    assert answer.duration == pytest.approx(8.47)
    [row] = ledger.wait(key.key_id, 1)
    assert row.audio_input_ms == 8470
    assert row.cost_nanos == 8470 * nanos(PER_SECOND) // 1000


def test_a_plain_text_answer_of_a_wav_upload_is_billed_for_the_duration_in_the_files_header(
    gateway: LiveGateway, key: IssuedKey, fake_media: FakeMedia, ledger: Ledger
) -> None:
    audio = wav(2.5)
    text = client_for(gateway, key).audio.transcriptions.create(
        model="whisper", file=("speech.wav", audio), response_format="text"
    )
    assert text.strip() == TRANSCRIPT
    assert fake_media.last("/v1/audio/transcriptions").files["file"] == [audio]
    [row] = ledger.wait(key.key_id, 1)
    assert row.audio_input_ms == 2500
    assert row.cost_nanos == 2500 * nanos(PER_SECOND) // 1000


def test_gpt_4o_transcribe_is_billed_by_the_text_and_audio_tokens_it_reports(
    gateway: LiveGateway, key: IssuedKey, ledger: Ledger
) -> None:
    answer = client_for(gateway, key).audio.transcriptions.create(model="transcribe", file=("a.mp3", AUDIO))
    assert answer.text == TRANSCRIPT
    [row] = ledger.wait(key.key_id, 1)
    assert (row.input_tokens, row.audio_input_tokens, row.output_tokens, row.audio_input_ms) == (20, 100, 30, 0)
    # 20 text at $2.50, 100 audio at $6, 30 out at $10 per million.
    assert row.cost_nanos == (20 * 2_500 + 100 * 6_000 + 30 * 10_000)


def test_a_streamed_transcription_is_relayed_event_by_event_and_billed_by_its_final_usage(
    gateway: LiveGateway, key: IssuedKey, fake_media: FakeMedia, ledger: Ledger
) -> None:
    stream = client_for(gateway, key).audio.transcriptions.create(
        model="transcribe", file=("a.mp3", AUDIO), stream=True
    )
    events = list(stream)
    assert [e.type for e in events][-1] == "transcript.text.done"
    assert "".join(e.delta for e in events if e.type == "transcript.text.delta").strip() == TRANSCRIPT
    assert fake_media.last("/v1/audio/transcriptions").fields["stream"] == "true"
    [row] = ledger.wait(key.key_id, 1)
    assert (row.stream, row.audio_input_tokens, row.cost_nanos) == (True, 100, 20 * 2_500 + 100 * 6_000 + 30 * 10_000)


def test_a_translation_goes_to_the_translations_endpoint_and_is_billed_per_second(
    gateway: LiveGateway, key: IssuedKey, fake_media: FakeMedia, ledger: Ledger
) -> None:
    answer = client_for(gateway, key).audio.translations.create(model="whisper", file=("de.mp3", AUDIO))
    assert answer.text == TRANSCRIPT
    got = fake_media.last("/v1/audio/translations")
    assert_provider_credential(got.headers, key)
    assert (got.fields["model"], got.files["file"]) == ("whisper-1-up", [AUDIO])
    [row] = ledger.wait(key.key_id, 1)
    assert (row.endpoint, row.cost_nanos) == ("audio.translations", 9 * nanos(PER_SECOND))


def test_an_azure_deployment_gets_its_path_its_api_version_and_its_api_key(
    gateway: LiveGateway, key: IssuedKey, fake_media: FakeMedia, ledger: Ledger
) -> None:
    answer = client_for(gateway, key).audio.transcriptions.create(model="whisper-azure", file=("a.mp3", AUDIO))
    assert answer.text == TRANSCRIPT
    got = fake_media.last("/openai/deployments/my-whisper-deployment/audio/transcriptions")
    assert got.headers["api-key"] == AZURE_SECRET and "Authorization" not in got.headers
    assert "api-version" in got.query
    assert got.files["file"] == [AUDIO]
    [row] = ledger.wait(key.key_id, 1)
    assert (row.provider, row.cost_nanos) == ("fake-media-azure", 9 * nanos(PER_SECOND))


def test_a_wildcard_route_reaches_the_model_named_after_its_prefix(
    gateway: LiveGateway, key: IssuedKey, fake_media: FakeMedia, ledger: Ledger
) -> None:
    client_for(gateway, key).audio.transcriptions.create(model="fake-media/whisper-1-up", file=("a.mp3", AUDIO))
    assert fake_media.last("/v1/audio/transcriptions").fields["model"] == "whisper-1-up"
    [row] = ledger.wait(key.key_id, 1)
    assert row.public_model == "fake-media/whisper-1-up"


def test_an_upload_counts_against_tokens_per_minute_by_its_text_not_its_audio_bytes(
    gateway: LiveGateway, issue_key: Any, ledger: Ledger
) -> None:
    limited = issue_key(tpm_limit=1000)  # AUDIO is 18,000 bytes: as text it would be 4,500 tokens
    answer = client_for(gateway, limited).audio.transcriptions.create(model="whisper", file=("a.mp3", AUDIO))
    assert answer.text == TRANSCRIPT
    assert len(ledger.wait(limited.key_id, 1)) == 1


def test_a_form_without_a_file_is_a_400_with_missing_file_and_reaches_no_provider(
    gateway: LiveGateway, key: IssuedKey, fake_media: FakeMedia, ledger: Ledger
) -> None:
    before = len(fake_media.requests)
    response = httpx.post(
        gateway.url + "/v1/audio/transcriptions", headers=key.headers, files={"model": (None, "whisper")}, timeout=20
    )
    assert response.status_code == 400
    assert response.json()["error"] == {
        "message": "'file' is required: the audio to transcribe.",
        "type": "invalid_request_error",
        "param": "file",
        "code": "missing_file",
    }
    assert len(fake_media.requests) == before
    assert ledger.records(key.key_id) == []


def test_an_upload_over_the_body_limit_is_a_413_in_openais_envelope(
    gateway: LiveGateway, key: IssuedKey, fake_media: FakeMedia
) -> None:
    before = len(fake_media.requests)
    with pytest.raises(openai.APIStatusError) as caught:  # the live gateway's limit is 1 MiB
        client_for(gateway, key).audio.transcriptions.create(model="whisper", file=("big.mp3", b"\0" * (1024 * 1024)))
    assert caught.value.status_code == 413
    assert caught.value.code == "request_too_large"
    assert len(fake_media.requests) == before


def test_an_unknown_model_is_a_404_with_model_not_found(gateway: LiveGateway, key: IssuedKey) -> None:
    with pytest.raises(openai.NotFoundError) as caught:
        client_for(gateway, key).audio.transcriptions.create(model="no-such-whisper", file=("a.mp3", AUDIO))
    assert caught.value.code == "model_not_found"


def test_a_providers_error_reaches_the_client_in_openais_envelope_and_leaves_one_unbilled_record(
    gateway: LiveGateway, key: IssuedKey, ledger: Ledger
) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        client_for(gateway, key).audio.transcriptions.create(model="media-error", file=("a.mp3", AUDIO))
    assert "Invalid file format." in caught.value.message
    [row] = ledger.wait(key.key_id, 1)
    assert (row.status_code, row.cost_nanos) == (400, 0)


# --- speech ------------------------------------------------------------------------------------


def test_speech_is_relayed_as_it_arrives_and_billed_per_character(
    gateway: LiveGateway, key: IssuedKey, fake_media: FakeMedia, ledger: Ledger
) -> None:
    fake_media.speech_gate.clear()
    text = "Hello from the gateway!"
    with client_for(gateway, key).audio.speech.with_streaming_response.create(
        model="tts", voice="alloy", input=text
    ) as response:
        assert response.headers["content-type"] == "audio/mpeg"
        chunks = response.iter_bytes()
        first = next(chunks)  # the provider holds the rest back until it is let go
        assert first == SPEECH_CHUNKS[0]
        fake_media.speech_gate.set()
        assert first + b"".join(chunks) == b"".join(SPEECH_CHUNKS)
    got = fake_media.last("/v1/audio/speech")
    assert_provider_credential(got.headers, key)
    assert (got.fields["model"], got.fields["input"], got.fields["voice"]) == ("tts-1-up", text, "alloy")
    [row] = ledger.wait(key.key_id, 1)
    assert (row.endpoint, row.input_characters) == ("audio.speech", len(text))
    assert row.cost_nanos == len(text) * nanos(PER_CHARACTER)


def test_speech_the_client_leaves_early_is_recorded_once_with_its_characters(
    gateway: LiveGateway, key: IssuedKey, fake_media: FakeMedia, ledger: Ledger
) -> None:
    fake_media.speech_gate.clear()
    try:
        with client_for(gateway, key).audio.speech.with_streaming_response.create(
            model="tts", voice="alloy", input="Goodbye"
        ) as response:
            assert next(response.iter_bytes()) == SPEECH_CHUNKS[0]
        [row] = ledger.wait(key.key_id, 1)
    finally:
        fake_media.speech_gate.set()
    assert (row.client_disconnected, row.error_code) == (True, "client_disconnected")
    assert row.cost_nanos == len("Goodbye") * nanos(PER_CHARACTER)


def test_speech_the_provider_refuses_is_recorded_once_and_not_billed_its_characters(
    gateway: LiveGateway, key: IssuedKey, ledger: Ledger
) -> None:
    with pytest.raises(openai.BadRequestError):
        client_for(gateway, key).audio.speech.create(model="media-error", voice="alloy", input="Never spoken")
    [row] = ledger.wait(key.key_id, 1)
    assert (row.status_code, row.input_characters, row.cost_nanos) == (400, 0, 0)


def test_speech_streamed_as_events_is_billed_by_the_tokens_its_last_event_reports(
    gateway: LiveGateway, key: IssuedKey, ledger: Ledger
) -> None:
    with client_for(gateway, key).audio.speech.with_streaming_response.create(
        model="tts-tokens", voice="alloy", input="Hi", stream_format="sse"
    ) as response:
        body = response.read()
    assert body.count(b"speech.audio.delta") == len(SPEECH_CHUNKS)
    [row] = ledger.wait(key.key_id, 1)
    assert (row.stream, row.input_tokens, row.audio_output_tokens, row.input_characters) == (True, 14, 500, 2)
    assert row.cost_nanos == 14 * 2_500 + 500 * 12_000  # $2.50 and $12 per million


# --- images ------------------------------------------------------------------------------------


def test_images_are_billed_per_image_at_the_size_and_quality_asked(
    gateway: LiveGateway, key: IssuedKey, fake_media: FakeMedia, ledger: Ledger, media_config: dict[str, int]
) -> None:
    answer = client_for(gateway, key).images.generate(
        model="dalle", prompt="A fox", n=2, size="1024x1792", quality="hd"
    )
    assert len(answer.data) == 2
    got = fake_media.last("/v1/images/generations")
    assert_provider_credential(got.headers, key)
    assert (got.fields["model"], got.fields["prompt"], got.fields["n"]) == ("dall-e-3-up", "A fox", 2)
    [row] = ledger.wait(key.key_id, 1)
    assert (row.endpoint, row.output_images, row.price_id) == ("images.generations", 2, media_config["hd/1024-x-1792"])
    assert row.cost_nanos == 2 * nanos(Decimal("0.12"))


def test_an_image_without_quality_is_billed_at_openais_default_standard(
    gateway: LiveGateway, key: IssuedKey, ledger: Ledger
) -> None:
    client_for(gateway, key).images.generate(model="dalle", prompt="A fox")
    [row] = ledger.wait(key.key_id, 1)
    assert (row.output_images, row.cost_nanos) == (1, nanos(Decimal("0.04")))


def test_gpt_image_1_is_billed_by_its_tokens_and_not_also_per_image(
    gateway: LiveGateway, key: IssuedKey, ledger: Ledger
) -> None:
    answer = client_for(gateway, key).images.generate(model="image-tokens", prompt="A fox", quality="high")
    assert answer.usage is not None and answer.usage.total_tokens == 4510
    [row] = ledger.wait(key.key_id, 1)
    assert (row.input_tokens, row.image_input_tokens, row.image_output_tokens, row.output_images) == (50, 300, 4160, 1)
    # 50 text at $5, 300 image tokens in at $10, 4160 out at $40 per million.
    assert row.cost_nanos == 50 * 5_000 + 300 * 10_000 + 4160 * 40_000


def test_streamed_images_are_relayed_event_by_event_and_billed_by_each_images_tokens(
    gateway: LiveGateway, key: IssuedKey, ledger: Ledger
) -> None:
    stream = client_for(gateway, key).images.generate(
        model="image-tokens", prompt="A fox", n=2, stream=True, partial_images=1
    )
    kinds = [event.type for event in stream]
    assert kinds == ["image_generation.partial_image", "image_generation.completed"] * 2
    [row] = ledger.wait(key.key_id, 1)
    assert (row.stream, row.image_output_tokens, row.output_images) == (True, 2 * 4160, 2)
    assert row.cost_nanos == 2 * (50 * 5_000 + 300 * 10_000 + 4160 * 40_000)


def test_an_image_edit_sends_the_image_intact_and_is_billed_per_image(
    gateway: LiveGateway, key: IssuedKey, fake_media: FakeMedia, ledger: Ledger
) -> None:
    image = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 40
    answer = client_for(gateway, key).images.edit(
        model="dalle", image=("fox.png", image, "image/png"), prompt="Add a hat", quality="hd"
    )
    assert len(answer.data) == 1
    got = fake_media.last("/v1/images/edits")
    assert_provider_credential(got.headers, key)
    assert (got.fields["model"], got.fields["prompt"], got.files["image"]) == ("dall-e-3-up", "Add a hat", [image])
    [row] = ledger.wait(key.key_id, 1)
    assert (row.endpoint, row.cost_nanos) == ("images.edits", nanos(Decimal("0.08")))


def test_a_budget_below_n_times_the_dearest_image_is_refused_before_the_provider_is_asked(
    gateway: LiveGateway, key: IssuedKey, fake_media: FakeMedia, django_db_blocker: Any, ledger: Ledger
) -> None:
    from accounts.models import ApiKey
    from billing.services import budget_set

    with django_db_blocker.unblock():
        budget_set(limit_usd=Decimal("0.20"), period="day", api_key=ApiKey.objects.get(pk=key.key_id))
    client = client_for(gateway, key)
    before = len(fake_media.requests)
    with pytest.raises(openai.APIStatusError) as caught:  # 2 x $0.12 > $0.20
        client.images.generate(model="dalle", prompt="A fox", n=2, size="1024x1792", quality="hd")
    assert caught.value.code == "budget_exceeded"
    assert len(fake_media.requests) == before
    client.images.generate(model="dalle", prompt="A fox", n=2, size="1024x1024", quality="hd")  # 2 x $0.08 fits
    [row] = ledger.wait(key.key_id, 1)
    assert row.cost_nanos == 2 * nanos(Decimal("0.08"))


def test_a_budget_below_a_speechs_characters_is_refused(
    gateway: LiveGateway, key: IssuedKey, fake_media: FakeMedia, django_db_blocker: Any
) -> None:
    from accounts.models import ApiKey
    from billing.services import budget_set

    with django_db_blocker.unblock():
        budget_set(limit_usd=Decimal("0.0001"), period="day", api_key=ApiKey.objects.get(pk=key.key_id))
    before = len(fake_media.requests)
    with pytest.raises(openai.APIStatusError) as caught:  # 10 characters at $0.000015 = $0.00015
        client_for(gateway, key).audio.speech.create(model="tts", voice="alloy", input="x" * 10)
    assert caught.value.code == "budget_exceeded"
    assert len(fake_media.requests) == before


# --- models ------------------------------------------------------------------------------------


def test_a_media_model_is_retrieved_as_openais_model_object(gateway: LiveGateway, key: IssuedKey) -> None:
    model = client_for(gateway, key).models.retrieve("whisper")
    assert (model.id, model.object, model.owned_by) == ("whisper", "model", "fake-media")


def test_a_media_model_the_key_may_not_use_is_a_404_and_cannot_be_called(gateway: LiveGateway, issue_key: Any) -> None:
    limited = issue_key(allowed_models=["tts"])
    client = client_for(gateway, limited)
    with pytest.raises(openai.NotFoundError) as caught:
        client.models.retrieve("whisper")
    assert caught.value.code == "model_not_found"
    with pytest.raises(openai.APIStatusError) as refused:
        client.audio.transcriptions.create(model="whisper", file=("a.mp3", AUDIO))
    assert refused.value.status_code in (403, 404)


# --- guardrails ----------------------------------------------------------------------------------

EMAIL = "alice.smith@example.com"


def test_a_transcriptions_prompt_is_redacted_by_the_input_guardrails_before_it_is_sent(
    gateway: LiveGateway, guarded: dict[str, IssuedKey], fake_media: FakeMedia
) -> None:
    key = guarded["redact"]
    client_for(gateway, key).audio.transcriptions.create(
        model="whisper", file=("a.mp3", AUDIO), prompt=f"Call {EMAIL} back."
    )
    got = fake_media.last("/v1/audio/transcriptions")
    assert got.fields["prompt"] == "Call [REDACTED:EMAIL] back."
    assert got.files["file"] == [AUDIO]  # the file passes as it came


def test_speech_whose_input_a_guardrail_blocks_reaches_no_provider(
    gateway: LiveGateway, guarded: dict[str, IssuedKey], fake_media: FakeMedia
) -> None:
    key = guarded["block"]
    before = len(fake_media.requests)
    with pytest.raises(openai.BadRequestError) as caught:
        client_for(gateway, key).audio.speech.create(model="tts", voice="alloy", input="My key is AKIAIOSFODNN7EXAMPLE")
    assert caught.value.code == "guardrail_blocked"
    assert len(fake_media.requests) == before
