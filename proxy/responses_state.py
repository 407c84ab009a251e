"""Responses API state for providers without the Responses API.

A provider that serves /v1/responses keeps its own conversations. For the
others the request is translated to chat completions (proxy.exchange), and
the gateway keeps the state instead:

* each translated answer is stored (proxy.StoredResponse, scoped to the
  tenant, for GATEWAY_RESPONSES_RETENTION_DAYS) unless the request says
  `store: false`. `ResponseKeeper` catches the whole `response` object: a
  JSON answer's, or a stream's from its last event (`response.completed`
  or `response.incomplete`), which the stream translator holds anyway, so
  nothing is buffered. The write is awaited just before the client gets
  that answer or last event, so a client that sends the next turn at once
  always finds it, whichever process serves it;
* a request with `previous_response_id` gets the conversation back
  (`conversation_resolved`, one indexed read before routing's upstream
  call): the earlier turns' input items, their output items (messages,
  function calls and their outputs, reasoning) and then its own input.
  The earlier `instructions` are not carried over, as on OpenAI.

An id the store does not hold for this tenant (another tenant's, expired,
deleted, or a native provider's own) passes through to a native provider
untouched, and is a 400 `previous_response_not_found` for a translated one,
the error OpenAI itself answers.

The queries are in proxy.responses_store, imported when one runs, each in a
thread of its own that gives its connection back: this module is on the
request path, which imports no ORM.
"""

import asyncio
import dataclasses
import logging
from collections.abc import Callable
from typing import Any, TypeVar

import orjson
from asgiref.sync import sync_to_async
from django.conf import settings

from gateway.kernel.context import TenantContext
from gateway.kernel.errors import GatewayError, backend_unavailable, invalid_request
from proxy.dialects import ClientCall, Dialect

log = logging.getLogger(__name__)
T = TypeVar("T")

PREVIOUS = "previous_response_id"
ID_MAX = 100  # the store's column: a longer id is no id the gateway made
# Answers worth a next turn; a failed one is not kept.
KEPT_STATUSES = frozenset({"completed", "incomplete"})
_FINAL_EVENTS = frozenset({"response.completed", "response.incomplete"})
_ID_PREFIXES = {"message": "msg", "function_call": "fc", "function_call_output": "fco", "reasoning": "rs"}
INPUT_ITEMS_LIMIT_MAX = 100


def previous_response_not_found(response_id: str) -> GatewayError:
    """OpenAI's own answer to an id it does not know (status, code, param)."""
    return GatewayError(
        400, "previous_response_not_found", f"Previous response with id '{response_id}' not found.", param=PREVIOUS
    )


def response_not_found(response_id: str) -> GatewayError:
    return GatewayError(404, "response_not_found", f"Response with id '{response_id}' not found.")


async def _in_thread(work: Callable[..., T], *args: Any) -> T:
    """A query of proxy.responses_store, in a thread of its own (a hung
    database holds that thread, never the request's), bounded in time."""
    try:
        return await asyncio.wait_for(
            sync_to_async(work, thread_sensitive=False)(*args), settings.DATABASE_LOAD_TIMEOUT_SECONDS
        )
    except TimeoutError:
        raise backend_unavailable("database") from None


# --- the next turn ------------------------------------------------------------------


async def conversation_resolved(ctx: TenantContext, call: ClientCall) -> ClientCall:
    """`call` with the conversation its `previous_response_id` names, when
    the store holds it for this tenant (its size grows by the history's, so
    limits and budgets count what goes upstream); else `call` as it is."""
    previous = call.body.get(PREVIOUS)
    if previous is None:
        return call
    if not isinstance(previous, str) or not previous:
        raise invalid_request(f"'{PREVIOUS}' must be a non-empty string.", param=PREVIOUS)
    if len(previous) > ID_MAX:
        return call
    from proxy.responses_store import stored_response_conversation

    history = await _in_thread(stored_response_conversation, ctx.tenant_id, previous)
    if history is None:
        return call
    return dataclasses.replace(call, history=tuple(history), size=call.size + len(orjson.dumps(history)))


def conversation_body(call: ClientCall, *, native: bool) -> dict[str, Any]:
    """The body to send upstream: without `previous_response_id`, its input
    the conversation so far followed by the request's own. An id the store
    did not resolve goes to a `native` provider as it is (it may be the
    provider's own) and is previous_response_not_found for a translated one."""
    body = call.body
    if body.get(PREVIOUS) is None or (native and call.history is None):
        return body
    if call.history is None:
        raise previous_response_not_found(str(body[PREVIOUS]))
    history = [item for item in map(_for_native, call.history) if item is not None] if native else call.history
    out = {key: value for key, value in body.items() if key != PREVIOUS}
    own = body.get("input")
    out["input"] = [*history, *([{"role": "user", "content": own}] if isinstance(own, str) else own or [])]
    return out


def _for_native(item: dict[str, Any]) -> dict[str, Any] | None:
    """A stored item as a Responses provider takes it from a stranger: no
    gateway-made ids (the provider would look them up), no reasoning (it
    only takes its own), an earlier answer's text as plain content."""
    kind = item.get("type", "message")
    if kind == "reasoning":
        return None
    if kind != "message":
        return {key: value for key, value in item.items() if key not in ("id", "status")}
    content = item.get("content")
    if item.get("role") == "assistant" and isinstance(content, list):
        content = "".join(str(p.get("text") or p.get("refusal") or "") for p in content if isinstance(p, dict))
    return {"role": item.get("role"), "content": content}


def input_items(value: Any, response_id: str) -> list[dict[str, Any]]:
    """A request's `input` as the list of items the store keeps and
    /input_items lists: each with a type and an id, text as content parts."""
    suffix = response_id.removeprefix("resp_")
    raw = [{"role": "user", "content": value}] if isinstance(value, str) else value if isinstance(value, list) else []
    items = []
    for index, given in enumerate(raw):
        if not isinstance(given, dict):
            continue
        kind = given.get("type") or "message"
        item = {"type": kind, "id": given.get("id") or f"{_ID_PREFIXES.get(kind, 'item')}_{suffix}_in{index}"}
        item.update((key, value) for key, value in given.items() if key not in ("type", "id"))
        if kind == "message" and isinstance(item.get("content"), str):
            part = "output_text" if item.get("role") == "assistant" else "input_text"
            item["content"] = [{"type": part, "text": item["content"]}]
        items.append(item)
    return items


# --- keeping an answer ---------------------------------------------------------------


def response_keeper(call: ClientCall) -> "ResponseKeeper | None":
    """The keeper of a translated Responses call, unless it says `store: false`."""
    if call.dialect is not Dialect.RESPONSES or call.body.get("store") is False:
        return None
    return ResponseKeeper(call)


class ResponseKeeper:
    """Catches one translated answer and stores it, once.

    A stream translator (the last of the chain: it passes every event on
    unchanged) for streams; `caught()` for a JSON answer. `keep()` is
    awaited by the relay before the answer, or the event that ends the
    stream, goes to the client. A failed write is logged, never the
    client's error: the answer stands, only its next turn will not find it.
    """

    __slots__ = ("call", "answer", "kept")

    def __init__(self, call: ClientCall) -> None:
        self.call = call
        self.answer: dict[str, Any] | None = None
        self.kept = False

    def feed(self, event: dict[str, Any]) -> list[dict[str, Any]]:
        if event.get("type") in _FINAL_EVENTS and isinstance(event.get("response"), dict):
            self.answer = event["response"]
        return [event]

    def close(self) -> list[dict[str, Any]]:
        return []

    def caught(self, answer: dict[str, Any]) -> dict[str, Any]:
        self.answer = answer
        return answer

    @property
    def due(self) -> bool:
        return self.answer is not None and not self.kept

    async def keep(self, ctx: TenantContext) -> None:
        if not self.due:
            return
        self.kept = True
        assert self.answer is not None
        if self.answer.get("status") not in KEPT_STATUSES or not isinstance(self.answer.get("id"), str):
            return
        from proxy.responses_store import stored_response_save

        try:
            await _in_thread(stored_response_save, self.row(ctx, self.answer))
        except Exception:
            log.warning("the response %s could not be stored", self.answer["id"], exc_info=True)

    def row(self, ctx: TenantContext, answer: dict[str, Any]) -> dict[str, Any]:
        body = self.call.body
        return {
            "response_id": answer["id"],
            "tenant_id": ctx.tenant_id,
            "api_key_id": ctx.key_id,
            "model": str(answer.get("model") or body["model"])[:200],
            "previous_response_id": str(body.get(PREVIOUS) or "")[:ID_MAX],
            "input_items": [*(self.call.history or ()), *input_items(body.get("input"), answer["id"])],
            "response": answer,
        }


# --- GET and DELETE /v1/responses/{id} -------------------------------------------------


async def response_retrieve(ctx: TenantContext, response_id: str) -> dict[str, Any]:
    """This tenant's stored response object; 404 for any other id."""
    found = await _stored(ctx, response_id)
    return found[0]


async def response_input_items(
    ctx: TenantContext, response_id: str, *, limit: int = 20, order: str = "desc", after: str | None = None
) -> dict[str, Any]:
    """The input items a response was made from, as OpenAI lists them: a
    page of `limit` after the item `after`, newest first unless `order`
    is asc."""
    _, items = await _stored(ctx, response_id)
    return input_items_page(items, limit=limit, order=order, after=after)


def input_items_page(items: list[dict[str, Any]], *, limit: int, order: str, after: str | None) -> dict[str, Any]:
    ordered = items[::-1] if order == "desc" else items
    start = 0
    if after:
        start = next((i + 1 for i, item in enumerate(ordered) if item.get("id") == after), len(ordered))
    page = ordered[start : start + limit]
    return {
        "object": "list",
        "data": page,
        "first_id": page[0].get("id") if page else None,
        "last_id": page[-1].get("id") if page else None,
        "has_more": start + limit < len(ordered),
    }


async def response_delete(ctx: TenantContext, response_id: str) -> dict[str, Any]:
    """Delete this tenant's stored response; 404 for any other id."""
    from proxy.responses_store import stored_response_delete

    if len(response_id) > ID_MAX or not await _in_thread(stored_response_delete, ctx.tenant_id, response_id):
        raise response_not_found(response_id)
    return {"id": response_id, "object": "response", "deleted": True}


async def _stored(ctx: TenantContext, response_id: str) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    from proxy.responses_store import stored_response_get

    found = None if len(response_id) > ID_MAX else await _in_thread(stored_response_get, ctx.tenant_id, response_id)
    if found is None:
        raise response_not_found(response_id)
    return found
