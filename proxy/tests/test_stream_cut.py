"""A budget that does not trust the provider (proxy.stream_cut): an upstream
that ignores max_tokens (5 asked, 50 streamed) is cut once the output passes
what the budget reserved. The client's stream ends as its API ends one at
max_tokens, the upstream connection is closed, the usage row says
`budget_reservation_exceeded` with the cost of what was relayed, and the
spend stays within the budget. A whole JSON answer past the reservation
cannot be unsent: its true cost is recorded, flagged the same way.

The fake here is greedy: it streams GREEDY_TOKENS one-token deltas whatever
max_tokens says (chat, Anthropic messages and the Responses API), and notes
when the gateway hung up before the end.
"""

import asyncio
import socket
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import anthropic
import openai
import orjson
import pytest
from aiohttp import web

from billing.tests.test_budgets_live import with_budget
from conftest import IssuedKey, Ledger, unique_marker, wait_until
from proxy.tests.live import LiveGateway

GREEDY_TOKENS = 50
ASKED = 5
# Output dearer than input, as with every real model: 5 output tokens and a
# short prompt fit the budget; 50 would spend five times past it.
INPUT_USD, OUTPUT_USD = Decimal("1"), Decimal("100")  # per million tokens
BUDGET_USD = "0.001"  # 1_000_000 nanos; one token of output costs 100_000
PREFIX = f"cut{uuid.uuid4().hex[:6]}"


@dataclass
class GreedyUpstream:
    """Streams GREEDY_TOKENS tokens, ignoring max_tokens; `hung_up` holds
    how many it had sent when a client closed the connection early."""

    port: int = 0
    hung_up: list[int] = field(default_factory=list)
    finished: int = 0
    delay: float = 0.01  # between tokens: the cut lands long before the end

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    async def _stream(self, request: web.Request, events: list[bytes]) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        sent = 0
        try:
            for event in events:
                await asyncio.sleep(self.delay)
                if request.transport is None or request.transport.is_closing():  # the client hung up
                    raise ConnectionResetError
                await response.write(event)
                sent += 1
        except (ConnectionError, asyncio.CancelledError):
            self.hung_up.append(sent)
            raise
        self.finished += 1
        return response

    async def chat(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        model, count = body["model"], self._count(body)
        if not body.get("stream"):
            return web.json_response(
                {
                    "id": "chatcmpl-greedy",
                    "object": "chat.completion",
                    "created": 1,
                    "model": model,
                    "choices": [
                        {"index": 0, "message": {"role": "assistant", "content": "x" * count}, "finish_reason": "stop"}
                    ],
                    "usage": {"prompt_tokens": 10, "completion_tokens": count, "total_tokens": 10 + count},
                }
            )

        def chunk(delta: dict[str, Any], finish: str | None = None) -> bytes:
            choice = {"index": 0, "delta": delta, "finish_reason": finish}
            data = {"id": "chatcmpl-greedy", "object": "chat.completion.chunk", "created": 1, "model": model}
            return b"data: " + orjson.dumps({**data, "choices": [choice]}) + b"\n\n"

        events = [chunk({"role": "assistant", "content": ""})]
        events += [chunk({"content": f"t{i} "}) for i in range(count)]
        events += [chunk({}, "stop"), b"data: [DONE]\n\n"]
        return await self._stream(request, events)

    async def messages(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        count = self._count(body)
        message = {
            "id": "msg_greedy",
            "type": "message",
            "role": "assistant",
            "model": body["model"],
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": {"input_tokens": 10, "output_tokens": 1},
        }
        events = [
            {"type": "message_start", "message": message},
            {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
            *(
                {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": f"t{i} "}}
                for i in range(count)
            ),
            {"type": "content_block_stop", "index": 0},
            {"type": "message_delta", "delta": {"stop_reason": "end_turn"}, "usage": {"output_tokens": count}},
            {"type": "message_stop"},
        ]
        return await self._stream(request, [_named(e) for e in events])

    async def responses(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        count = self._count(body)
        response = {"id": "resp_greedy", "object": "response", "model": body["model"], "status": "in_progress"}
        response |= {"output": [], "created_at": 1}
        events: list[dict[str, Any]] = [{"type": "response.created", "response": response}]
        events += [
            {"type": "response.output_text.delta", "item_id": "msg_1", "output_index": 0, "delta": f"t{i} "}
            for i in range(count)
        ]
        usage = {"input_tokens": 10, "output_tokens": count, "total_tokens": 10 + count}
        events.append({"type": "response.completed", "response": {**response, "status": "completed", "usage": usage}})
        for number, event in enumerate(events):
            event["sequence_number"] = number
        return await self._stream(request, [_named(e) for e in events])

    @staticmethod
    def _count(body: dict[str, Any]) -> int:
        """Greedy, unless the prompt says "honest": then it stops at what was asked."""
        asked = body.get("max_tokens") or body.get("max_completion_tokens") or body.get("max_output_tokens")
        return int(asked) if "honest" in orjson.dumps(body).decode() and asked else GREEDY_TOKENS

    def start(self) -> "GreedyUpstream":
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        self.port = sock.getsockname()[1]
        ready = threading.Event()
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self.chat)
        app.router.add_post("/v1/messages", self.messages)
        app.router.add_post("/v1/responses", self.responses)

        def serve() -> None:
            loop = asyncio.new_event_loop()
            runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
            loop.run_until_complete(runner.setup())
            loop.run_until_complete(web.SockSite(runner, sock).start())
            ready.set()
            loop.run_forever()

        threading.Thread(target=serve, name="greedy-upstream", daemon=True).start()
        ready.wait(10)
        return self


def _named(event: dict[str, Any]) -> bytes:
    return b"event: " + event["type"].encode() + b"\ndata: " + orjson.dumps(event) + b"\n\n"


@pytest.fixture(scope="module")
def greedy() -> GreedyUpstream:
    return GreedyUpstream().start()


@pytest.fixture(scope="module")
def gateway(gateway_config: None, django_db_blocker: Any, greedy: GreedyUpstream) -> Iterator[LiveGateway]:
    from billing.services import price_set
    from proxy.services import provider_upsert, route_upsert

    with django_db_blocker.unblock():
        openai_kind, _ = provider_upsert(name=f"{PREFIX}-openai", kind="openai", base_url=greedy.url, api_key="k")
        claude_kind, _ = provider_upsert(
            name=f"{PREFIX}-claude", kind="anthropic", base_url=greedy.url.removesuffix("/v1"), api_key="k"
        )
        route_upsert(model=f"{PREFIX}-gpt", provider=openai_kind, upstream_model=f"{PREFIX}-greedy-gpt")
        route_upsert(model=f"{PREFIX}-claude", provider=claude_kind, upstream_model=f"{PREFIX}-greedy-claude")
        for model in (f"{PREFIX}-greedy-gpt", f"{PREFIX}-greedy-claude"):
            price_set(model=model, input_usd=INPUT_USD, output_usd=OUTPUT_USD)
    live = LiveGateway().start()
    yield live
    live.terminate()


@pytest.fixture
def budgeted(issue_key: Any, django_db_blocker: Any) -> IssuedKey:
    key = issue_key()
    with_budget(django_db_blocker, key, BUDGET_USD)
    return key


def openai_client(gateway: LiveGateway, key: IssuedKey) -> openai.OpenAI:
    return openai.OpenAI(base_url=gateway.url + "/v1", api_key=key.plaintext, max_retries=0, timeout=20)


def anthropic_client(gateway: LiveGateway, key: IssuedKey) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=gateway.url, api_key=key.plaintext, max_retries=0, timeout=20)


def wait_hung_up(greedy: GreedyUpstream, count: int) -> None:
    wait_until(lambda: len(greedy.hung_up) >= count, 10, "the gateway never closed the upstream connection")


def assert_cut(ledger: Ledger, key: IssuedKey, relayed_tokens: int) -> Any:
    """The usage row of the one cut request, and the spend within the budget."""
    [row] = ledger.wait(key.key_id, 1)
    assert (row.status_code, row.error_code, row.stream) == (200, "budget_reservation_exceeded", True)
    assert row.usage_estimated  # the output as the gateway counted it: the provider never said
    assert row.output_tokens == relayed_tokens
    assert 0 < row.cost_nanos <= 1_000_000  # what was relayed, within the budget
    return row


def test_a_chat_stream_past_the_reservation_ends_with_finish_reason_length_and_closes_the_upstream(
    gateway: LiveGateway, budgeted: IssuedKey, greedy: GreedyUpstream, ledger: Ledger
) -> None:
    hung_up = len(greedy.hung_up)
    stream = openai_client(gateway, budgeted).chat.completions.create(
        model=f"{PREFIX}-gpt",
        messages=[{"role": "user", "content": unique_marker()}],
        max_tokens=ASKED,
        stream=True,
    )
    chunks = list(stream)  # the SDK reads to [DONE] without an error
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert chunks[-1].choices[0].finish_reason == "length"
    relayed = text.split()
    assert ASKED <= len(relayed) < 10  # 5 asked, a few more from the prompt's unused worst case; never 50
    wait_hung_up(greedy, hung_up + 1)
    assert greedy.hung_up[-1] < GREEDY_TOKENS
    assert_cut(ledger, budgeted, len(relayed))


def test_an_anthropic_stream_past_the_reservation_ends_with_max_tokens_and_message_stop(
    gateway: LiveGateway, budgeted: IssuedKey, greedy: GreedyUpstream, ledger: Ledger
) -> None:
    hung_up = len(greedy.hung_up)
    with anthropic_client(gateway, budgeted).messages.stream(
        model=f"{PREFIX}-claude", max_tokens=ASKED, messages=[{"role": "user", "content": unique_marker()}]
    ) as stream:
        kinds = [event.type for event in stream]
        message = stream.get_final_message()
    assert kinds[-2:] == ["message_delta", "message_stop"] and "content_block_stop" in kinds
    assert message.stop_reason == "max_tokens"
    relayed = message.content[0].text.split()
    assert ASKED <= len(relayed) < 10
    assert message.usage.output_tokens == len(relayed)
    wait_hung_up(greedy, hung_up + 1)
    row = assert_cut(ledger, budgeted, len(relayed))
    assert row.input_tokens == 10  # as message_start reported it


def test_a_responses_stream_past_the_reservation_ends_with_response_incomplete(
    gateway: LiveGateway, budgeted: IssuedKey, greedy: GreedyUpstream, ledger: Ledger
) -> None:
    hung_up = len(greedy.hung_up)
    events = list(
        openai_client(gateway, budgeted).responses.create(
            model=f"{PREFIX}-gpt", input=unique_marker(), max_output_tokens=ASKED, stream=True
        )
    )
    last = events[-1]
    assert last.type == "response.incomplete"
    assert last.response.incomplete_details is not None
    assert last.response.incomplete_details.reason == "max_output_tokens"
    relayed = "".join(e.delta for e in events if e.type == "response.output_text.delta").split()
    assert ASKED <= len(relayed) < 10
    wait_hung_up(greedy, hung_up + 1)
    assert_cut(ledger, budgeted, len(relayed))


def test_a_translated_stream_is_ended_in_the_clients_dialect(
    gateway: LiveGateway, budgeted: IssuedKey, greedy: GreedyUpstream, ledger: Ledger
) -> None:
    """A chat client, an Anthropic upstream: the upstream's max_tokens ending, translated."""
    chunks = list(
        openai_client(gateway, budgeted).chat.completions.create(
            model=f"{PREFIX}-claude",
            messages=[{"role": "user", "content": unique_marker()}],
            max_tokens=ASKED,
            stream=True,
        )
    )
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finishes == ["length"]
    relayed = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices).split()
    assert_cut(ledger, budgeted, len(relayed))


def test_an_honest_provider_that_stops_at_max_tokens_is_not_cut(
    gateway: LiveGateway, budgeted: IssuedKey, ledger: Ledger
) -> None:
    chunks = list(
        openai_client(gateway, budgeted).chat.completions.create(
            model=f"{PREFIX}-gpt",
            messages=[{"role": "user", "content": f"honest {unique_marker()}"}],
            max_tokens=ASKED,
            stream=True,
        )
    )
    assert chunks[-1].choices[0].finish_reason == "stop"
    [row] = ledger.wait(budgeted.key_id, 1)
    assert (row.status_code, row.error_code) == (200, "")


def test_a_whole_answer_past_the_reservation_is_recorded_at_its_true_cost_and_flagged(
    gateway: LiveGateway, budgeted: IssuedKey, ledger: Ledger
) -> None:
    answer = openai_client(gateway, budgeted).chat.completions.create(
        model=f"{PREFIX}-gpt", messages=[{"role": "user", "content": unique_marker()}], max_tokens=ASKED
    )
    assert answer.choices[0].message.content == "x" * GREEDY_TOKENS  # it cannot be unsent
    [row] = ledger.wait(budgeted.key_id, 1)
    assert (row.status_code, row.error_code, row.output_tokens) == (200, "budget_reservation_exceeded", GREEDY_TOKENS)
    assert row.cost_nanos == 10 * 1_000 + GREEDY_TOKENS * 100_000  # the true cost
