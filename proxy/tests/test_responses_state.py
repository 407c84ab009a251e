"""Responses API state for every provider: the official openai SDK against
the gateway under daphne, with `previous_response_id` on a provider without
the Responses API (`compat-test`: translated to chat completions), and the
stored responses' GET, input items and DELETE."""

import datetime as dt
from typing import Any

import openai
import orjson
import pytest

from conftest import IssuedKey, Ledger, unique_marker
from proxy.responses_state import conversation_body, input_items, input_items_page
from proxy.tests.fake_upstream import DEFAULT_WORDS, REASONING_TEXT, TOOL_ARGUMENTS, FakeUpstream
from proxy.tests.live import LiveGateway

TEXT = " ".join(DEFAULT_WORDS)
TRANSLATED = "compat-test"  # an openai-compatible provider: no /v1/responses
REASONING = "fake-compat/fake-reasoning"  # the same provider, a model that thinks aloud
NATIVE = "gpt-test"  # kind openai: the provider serves /v1/responses and keeps its own state
LOOKUP_TOOL = {"type": "function", "name": "lookup", "parameters": {"type": "object", "properties": {}}}


def client_for(gateway: LiveGateway, key: IssuedKey) -> openai.OpenAI:
    return openai.OpenAI(base_url=gateway.url + "/v1", api_key=key.plaintext, max_retries=0, timeout=20)


def sent_upstream(fake: FakeUpstream, marker: str) -> Any:
    """The one upstream request that carried `marker`."""
    matches = [r for r in fake.requests if marker in orjson.dumps(r.body).decode()]
    assert len(matches) == 1, f"the upstream saw {len(matches)} requests with {marker}"
    return matches[0]


def text_of(item: Any) -> str:
    """The text of a listed message item."""
    return str(item.content[0].text)


def stored_row(blocker: Any, response_id: str) -> Any:
    from proxy.models import StoredResponse

    with blocker.unblock():
        return StoredResponse.objects.filter(response_id=response_id).first()


def assert_previous_not_found(caught: pytest.ExceptionInfo[openai.BadRequestError], response_id: str) -> None:
    assert caught.value.status_code == 400
    assert caught.value.body == {
        "message": f"Previous response with id '{response_id}' not found.",
        "type": "invalid_request_error",
        "param": "previous_response_id",
        "code": "previous_response_not_found",
    }


# --- the next turn, rebuilt for a chat upstream -----------------------------------


def test_the_second_turn_sends_the_first_turns_question_and_answer_upstream_but_not_its_instructions(
    live_gateway: LiveGateway, key: IssuedKey, fake_upstream: FakeUpstream, ledger: Ledger
) -> None:
    first, second = unique_marker(), unique_marker()
    client = client_for(live_gateway, key)
    r1 = client.responses.create(model=TRANSLATED, input=first, instructions="Be brief.")
    r2 = client.responses.create(
        model=TRANSLATED, input=second, previous_response_id=r1.id, instructions="Answer in French."
    )
    assert r2.output_text == TEXT and r2.previous_response_id == r1.id and r1.previous_response_id is None
    seen = sent_upstream(fake_upstream, second)
    assert seen.path == "/v1/chat/completions"
    assert "previous_response_id" not in seen.body
    assert seen.body["messages"] == [
        {"role": "system", "content": "Answer in French."},  # this turn's instructions only, as on OpenAI
        {"role": "user", "content": first},
        {"role": "assistant", "content": TEXT},
        {"role": "user", "content": second},
    ]
    records = ledger.wait(key.key_id, 2)  # one per upstream request
    assert [(r.endpoint, r.status_code, r.error_code) for r in records] == [("responses", 200, "")] * 2


def test_a_conversation_is_carried_across_several_hops(
    live_gateway: LiveGateway, key: IssuedKey, fake_upstream: FakeUpstream
) -> None:
    markers = [unique_marker() for _ in range(3)]
    client = client_for(live_gateway, key)
    previous = None
    for marker in markers:
        previous = client.responses.create(model=TRANSLATED, input=marker, previous_response_id=previous).id
    assert sent_upstream(fake_upstream, markers[-1]).body["messages"] == [
        {"role": "user", "content": markers[0]},
        {"role": "assistant", "content": TEXT},
        {"role": "user", "content": markers[1]},
        {"role": "assistant", "content": TEXT},
        {"role": "user", "content": markers[2]},
    ]


def test_a_tool_call_and_its_output_are_sent_back_as_the_chat_upstream_expects(
    live_gateway: LiveGateway, key: IssuedKey, fake_upstream: FakeUpstream
) -> None:
    marker = unique_marker()
    client = client_for(live_gateway, key)
    r1 = client.responses.create(model=TRANSLATED, input=marker, tools=[LOOKUP_TOOL])
    [call] = r1.output
    assert call.type == "function_call" and call.arguments == TOOL_ARGUMENTS
    output = unique_marker()
    r2 = client.responses.create(
        model=TRANSLATED,
        previous_response_id=r1.id,
        input=[{"type": "function_call_output", "call_id": call.call_id, "output": output}],
        tools=[LOOKUP_TOOL],
    )
    assert r2.output_text == TEXT
    assert sent_upstream(fake_upstream, output).body["messages"] == [
        {"role": "user", "content": marker},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {"id": call.call_id, "type": "function", "function": {"name": "lookup", "arguments": TOOL_ARGUMENTS}}
            ],
        },
        {"role": "tool", "tool_call_id": call.call_id, "content": output},
    ]


def test_reasoning_items_are_kept_in_the_conversation_and_listed_with_its_input(
    live_gateway: LiveGateway, key: IssuedKey, fake_upstream: FakeUpstream
) -> None:
    first, second = unique_marker(), unique_marker()
    client = client_for(live_gateway, key)
    r1 = client.responses.create(model=REASONING, input=first)
    assert [item.type for item in r1.output] == ["reasoning", "message"]
    r2 = client.responses.create(model=REASONING, input=second, previous_response_id=r1.id)
    items = client.responses.input_items.list(r2.id, order="asc").data
    assert [(item.type, getattr(item, "role", None)) for item in items] == [
        ("message", "user"),
        ("reasoning", None),
        ("message", "assistant"),
        ("message", "user"),
    ]
    assert items[1].summary[0].text == REASONING_TEXT
    # A chat upstream takes no reasoning back: the rest of the turn goes, and the answer says what did not.
    assert [m["role"] for m in sent_upstream(fake_upstream, second).body["messages"]] == ["user", "assistant", "user"]
    response = client.responses.with_raw_response.create(
        model=REASONING, input=unique_marker(), previous_response_id=r2.id
    )
    assert "dropped: input reasoning items" in response.headers["x-gateway-translation-notes"]


def test_a_streamed_answer_is_stored_once_complete_and_its_next_turn_finds_it_at_once(
    live_gateway: LiveGateway, key: IssuedKey, fake_upstream: FakeUpstream, ledger: Ledger
) -> None:
    first, second = unique_marker(), unique_marker()
    client = client_for(live_gateway, key)
    with client.responses.stream(model=TRANSLATED, input=first) as stream:
        kinds = [event.type for event in stream]
        final = stream.get_final_response()
    assert kinds[0] == "response.created" and kinds[-1] == "response.completed"
    kept = client.responses.retrieve(final.id)  # no wait: stored before the last event was sent
    assert (kept.id, kept.status, kept.output_text) == (final.id, "completed", TEXT)
    with client.responses.stream(model=TRANSLATED, input=second, previous_response_id=final.id) as stream:
        assert stream.get_final_response().output_text == TEXT
    assert [m["content"] for m in sent_upstream(fake_upstream, second).body["messages"]] == [first, TEXT, second]
    assert [r.stream for r in ledger.wait(key.key_id, 2)] == [True, True]


# --- GET, input items, DELETE ----------------------------------------------------


def test_a_stored_response_is_retrieved_as_it_was_answered(live_gateway: LiveGateway, key: IssuedKey) -> None:
    client = client_for(live_gateway, key)
    answered = client.responses.create(model=TRANSLATED, input="hi", instructions="Be brief.", temperature=0.5)
    kept = client.responses.retrieve(answered.id)
    assert kept.model_dump() == answered.model_dump()
    assert (kept.instructions, kept.temperature, kept.model) == ("Be brief.", 0.5, TRANSLATED)


def test_input_items_are_listed_newest_first_in_pages_as_openai_lists_them(
    live_gateway: LiveGateway, key: IssuedKey
) -> None:
    first, second = unique_marker(), unique_marker()
    client = client_for(live_gateway, key)
    r1 = client.responses.create(model=TRANSLATED, input=first)
    r2 = client.responses.create(
        model=TRANSLATED,
        previous_response_id=r1.id,
        input=[{"role": "user", "content": [{"type": "input_text", "text": second}]}],
    )
    listed: Any = client.responses.input_items.list(r2.id)  # its first_id and last_id are not typed
    texts = [text_of(item) for item in listed.data]
    assert texts == [second, TEXT, first]  # newest first by default
    assert (listed.first_id, listed.last_id, listed.has_more) == (listed.data[0].id, listed.data[-1].id, False)
    assert len({item.id for item in listed.data}) == 3 and r1.output[0].id in {item.id for item in listed.data}
    page: Any = client.responses.input_items.list(r2.id, order="asc", limit=2)
    assert [text_of(item) for item in page.data] == [first, TEXT]
    assert page.has_more and page.last_id == page.data[-1].id
    # The SDK follows `after` to the end.
    every = client.responses.input_items.list(r2.id, order="asc", limit=1)
    assert [text_of(item) for item in every] == [first, TEXT, second]
    with pytest.raises(openai.BadRequestError) as caught:
        client.responses.input_items.list(r2.id, limit=101)
    assert caught.value.code == "invalid_request"


def test_a_deleted_response_is_gone_for_retrieval_and_for_the_next_turn(
    live_gateway: LiveGateway, key: IssuedKey, fake_upstream: FakeUpstream
) -> None:
    client = client_for(live_gateway, key)
    answered = client.responses.create(model=TRANSLATED, input="hi")
    assert client.delete(f"/responses/{answered.id}", cast_to=object) == {
        "id": answered.id,
        "object": "response",
        "deleted": True,
    }
    with pytest.raises(openai.NotFoundError) as gone:
        client.responses.retrieve(answered.id)
    assert gone.value.code == "response_not_found"
    with pytest.raises(openai.NotFoundError):
        client.responses.delete(answered.id)
    marker = unique_marker()
    with pytest.raises(openai.BadRequestError) as caught:
        client.responses.create(model=TRANSLATED, input=marker, previous_response_id=answered.id)
    assert_previous_not_found(caught, answered.id)
    assert not [r for r in fake_upstream.requests if marker in orjson.dumps(r.body).decode()]


def test_another_tenant_gets_404_for_every_stored_response_and_cannot_continue_it(
    live_gateway: LiveGateway, issue_key: Any, fake_upstream: FakeUpstream, ledger: Ledger, django_db_blocker: Any
) -> None:
    owner, stranger = issue_key(), issue_key()
    answered = client_for(live_gateway, owner).responses.create(model=TRANSLATED, input="a secret")
    other = client_for(live_gateway, stranger)
    for attempt in (
        lambda: other.responses.retrieve(answered.id),
        lambda: other.responses.input_items.list(answered.id),
        lambda: other.responses.delete(answered.id),
    ):
        with pytest.raises(openai.NotFoundError) as caught:
            attempt()
        assert caught.value.status_code == 404 and caught.value.code == "response_not_found"
    marker = unique_marker()
    with pytest.raises(openai.BadRequestError) as refused:
        other.responses.create(model=TRANSLATED, input=marker, previous_response_id=answered.id)
    assert_previous_not_found(refused, answered.id)
    assert not [r for r in fake_upstream.requests if marker in orjson.dumps(r.body).decode()]
    assert ledger.records(stranger.key_id) == []  # nothing reached an upstream
    assert client_for(live_gateway, owner).responses.retrieve(answered.id).output_text == TEXT  # still there


def test_another_key_of_the_same_tenant_may_continue_the_conversation(
    live_gateway: LiveGateway, key: IssuedKey, django_db_blocker: Any
) -> None:
    from accounts.models import Tenant
    from accounts.services import api_key_issue

    with django_db_blocker.unblock():
        plaintext, _ = api_key_issue(tenant=Tenant.objects.get(pk=key.tenant_id), name="second")
    answered = client_for(live_gateway, key).responses.create(model=TRANSLATED, input="hi")
    colleague = IssuedKey(plaintext=plaintext, key_id=0, tenant_id=key.tenant_id)
    follow_up = client_for(live_gateway, colleague).responses.create(
        model=TRANSLATED, input="and?", previous_response_id=answered.id
    )
    assert follow_up.previous_response_id == answered.id


def test_store_false_stores_nothing(
    live_gateway: LiveGateway, key: IssuedKey, django_db_blocker: Any, ledger: Ledger
) -> None:
    client = client_for(live_gateway, key)
    answered = client.responses.create(model=TRANSLATED, input="hi", store=False)
    assert answered.output_text == TEXT
    with client.responses.stream(model=TRANSLATED, input="hi", store=False) as stream:
        streamed = stream.get_final_response()
    ledger.wait(key.key_id, 2)
    for response_id in (answered.id, streamed.id):
        assert stored_row(django_db_blocker, response_id) is None
        with pytest.raises(openai.NotFoundError):
            client.responses.retrieve(response_id)
    with pytest.raises(openai.BadRequestError) as caught:
        client.responses.create(model=TRANSLATED, input="and?", previous_response_id=answered.id)
    assert_previous_not_found(caught, answered.id)


def test_a_stored_row_belongs_to_the_tenant_and_key_and_expires_after_the_retention(
    live_gateway: LiveGateway, key: IssuedKey, django_db_blocker: Any
) -> None:
    answered = client_for(live_gateway, key).responses.create(model=TRANSLATED, input="hi")
    row = stored_row(django_db_blocker, answered.id)
    assert (row.tenant_id, row.api_key_id, row.model, row.previous_response_id) == (
        key.tenant_id,
        key.key_id,
        TRANSLATED,
        "",
    )
    assert row.response["id"] == answered.id and row.input_items[0]["content"] == [{"type": "input_text", "text": "hi"}]
    assert dt.timedelta(days=29, hours=23) < row.expires_at - row.created_at <= dt.timedelta(days=30)


def test_the_retention_task_deletes_expired_responses_which_are_gone_already_before_it_runs(
    live_gateway: LiveGateway, key: IssuedKey, django_db_blocker: Any
) -> None:
    from django.utils import timezone

    from proxy.models import StoredResponse
    from proxy.tasks import responses_retention_task

    client = client_for(live_gateway, key)
    old, fresh = (client.responses.create(model=TRANSLATED, input="hi").id for _ in range(2))
    with django_db_blocker.unblock():
        StoredResponse.objects.filter(response_id=old).update(expires_at=timezone.now() - dt.timedelta(seconds=1))
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(old)
    with django_db_blocker.unblock():
        assert responses_retention_task() >= 1
    assert stored_row(django_db_blocker, old) is None
    assert client.responses.retrieve(fresh).id == fresh


# --- providers with the Responses API ---------------------------------------------


def test_a_native_provider_gets_its_own_previous_response_id_untouched_and_nothing_is_stored(
    live_gateway: LiveGateway, key: IssuedKey, fake_upstream: FakeUpstream, django_db_blocker: Any
) -> None:
    marker = unique_marker()
    client = client_for(live_gateway, key)
    answered = client.responses.create(model=NATIVE, input=marker, previous_response_id="resp_theprovidersown")
    seen = sent_upstream(fake_upstream, marker)
    assert seen.path == "/v1/responses"
    assert (seen.body["previous_response_id"], seen.body["input"]) == ("resp_theprovidersown", marker)
    assert stored_row(django_db_blocker, answered.id) is None


def test_a_conversation_the_gateway_stored_continues_on_a_native_provider_as_plain_input(
    live_gateway: LiveGateway, key: IssuedKey, fake_upstream: FakeUpstream
) -> None:
    first, second = unique_marker(), unique_marker()
    client = client_for(live_gateway, key)
    r1 = client.responses.create(model=REASONING, input=first)
    client.responses.create(model=NATIVE, input=second, previous_response_id=r1.id)
    seen = sent_upstream(fake_upstream, second)
    assert seen.path == "/v1/responses" and "previous_response_id" not in seen.body
    # No gateway-made ids and no reasoning: the provider would look them up and fail.
    assert seen.body["input"] == [
        {"role": "user", "content": [{"type": "input_text", "text": first}]},
        {"role": "assistant", "content": TEXT},
        {"role": "user", "content": second},
    ]


# --- the pure parts ----------------------------------------------------------------


def test_input_becomes_typed_items_with_ids_leaving_the_clients_own_ids() -> None:
    items = input_items(
        [
            {"role": "assistant", "content": "before"},
            {"type": "function_call_output", "call_id": "c1", "output": "42", "id": "mine"},
        ],
        "resp_abc",
    )
    assert items == [
        {
            "type": "message",
            "id": "msg_abc_in0",
            "role": "assistant",
            "content": [{"type": "output_text", "text": "before"}],
        },
        {"type": "function_call_output", "id": "mine", "call_id": "c1", "output": "42"},
    ]
    assert input_items("hi", "resp_x") == [
        {"type": "message", "id": "msg_x_in0", "role": "user", "content": [{"type": "input_text", "text": "hi"}]}
    ]


def test_a_page_after_an_unknown_item_is_empty() -> None:
    items = [{"id": "a"}, {"id": "b"}]
    assert input_items_page(items, limit=5, order="asc", after="zzz") == {
        "object": "list",
        "data": [],
        "first_id": None,
        "last_id": None,
        "has_more": False,
    }
    assert input_items_page(items, limit=1, order="desc", after="b")["data"] == [{"id": "a"}]


def test_an_unresolved_id_is_refused_for_a_translated_call_and_passed_on_for_a_native_one() -> None:
    from gateway.kernel.errors import GatewayError
    from proxy.apis.responses import responses_call

    call = responses_call(b'{"model": "m", "input": "hi", "previous_response_id": "resp_nope"}')
    assert conversation_body(call, native=True) is call.body
    with pytest.raises(GatewayError) as caught:
        conversation_body(call, native=False)
    assert (caught.value.status, caught.value.code, caught.value.param) == (
        400,
        "previous_response_not_found",
        "previous_response_id",
    )
