"""The semantic cache's options of tenant_create and key_create, and the fields they set."""

import argparse
from decimal import Decimal, InvalidOperation
from typing import Any

from gateway.kernel import cli

_SCOPES = {"last-user-message": "last_user_message", "conversation": "conversation"}
_SYSTEM = {"include": True, "ignore": False}


def threshold(text: str) -> Decimal:
    try:
        value = Decimal(text)
    except InvalidOperation:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not value.is_finite() or not 0 <= value <= 1:
        raise argparse.ArgumentTypeError("a similarity threshold is between 0 and 1, for example 0.95")
    return value.quantize(Decimal("0.001"))


def tokens(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError("a number of tokens is 0 or more")
    return value


def add_semantic_arguments(parser: argparse.ArgumentParser, *, tenant: bool) -> None:
    whose = "the tenant's keys" if tenant else "this key (empty: its tenant's)"
    parser.add_argument(
        "--semantic-threshold",
        type=threshold,
        default=None,
        metavar="0.0-1.0",
        help=f"Semantic cache for {whose}: serve an earlier answer to a question at least this similar "
        "(needs a cache lifetime, --cache-ttl).",
    )
    parser.add_argument("--semantic-scope", choices=sorted(_SCOPES), default=None, help="What is compared.")
    parser.add_argument(
        "--semantic-system-prompt",
        choices=sorted(_SYSTEM),
        default=None,
        help="include: only answers given under the same system prompt match; ignore: any system prompt.",
    )
    parser.add_argument(
        "--semantic-min-tokens", type=tokens, default=None, metavar="N", help="Shortest answer offered."
    )
    parser.add_argument("--semantic-max-tokens", type=tokens, default=None, metavar="N", help="Longest answer offered.")
    parser.add_argument(
        "--semantic-ttl",
        type=cli.seconds,
        default=None,
        metavar="SECONDS",
        help="How long an answer is offered to similar questions (at most the cache lifetime).",
    )
    if tenant:
        parser.add_argument(
            "--embedding-model",
            default=None,
            metavar="MODEL",
            help="The embeddings model (a route) that embeds questions; '' for CACHESTORE_SEMANTIC_EMBEDDING_MODEL.",
        )


def semantic_fields(options: dict[str, Any]) -> dict[str, Any]:
    """The model fields the options given set (options left out are not in it)."""
    given: dict[str, Any] = {
        "semantic_threshold": options.get("semantic_threshold"),
        "semantic_scope": _SCOPES.get(options.get("semantic_scope") or ""),
        "semantic_include_system": _SYSTEM.get(options.get("semantic_system_prompt") or ""),
        "semantic_min_answer_tokens": options.get("semantic_min_tokens"),
        "semantic_max_answer_tokens": options.get("semantic_max_tokens"),
        "semantic_ttl_seconds": options.get("semantic_ttl"),
        "semantic_embedding_model": options.get("embedding_model"),
    }
    fields = {name: value for name, value in given.items() if value is not None}
    low, high = fields.get("semantic_min_answer_tokens"), fields.get("semantic_max_answer_tokens")
    if low is not None and high is not None and low > high:
        raise ValueError("--semantic-min-tokens is larger than --semantic-max-tokens: no answer would be offered")
    return fields
