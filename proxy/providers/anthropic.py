"""Anthropic's usage convention (the Messages API adapter builds on this).

Anthropic reports `input_tokens` *excluding* cache reads and cache writes,
which come separately as `cache_read_input_tokens` and
`cache_creation_input_tokens` (split into 5-minute and 1-hour writes in
`cache_creation`). Thinking tokens are part of `output_tokens` and are not
reported apart, so they are billed as output.
"""

from typing import Any

from proxy.context import Usage


def _count(value: Any) -> int:
    return value if isinstance(value, int) and value > 0 else 0


def usage_from_anthropic(usage: Any) -> Usage | None:
    if not isinstance(usage, dict):
        return None
    creation = usage.get("cache_creation")
    if isinstance(creation, dict):
        write_5m = _count(creation.get("ephemeral_5m_input_tokens"))
        write_1h = _count(creation.get("ephemeral_1h_input_tokens"))
    else:  # older responses: one total, written with the default 5-minute lifetime
        write_5m, write_1h = _count(usage.get("cache_creation_input_tokens")), 0
    return Usage(
        input_tokens=_count(usage.get("input_tokens")),
        cached_input_tokens=_count(usage.get("cache_read_input_tokens")),
        cache_write_5m_tokens=write_5m,
        cache_write_1h_tokens=write_1h,
        output_tokens=_count(usage.get("output_tokens")),
    )
