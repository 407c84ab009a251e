"""Reading JSON that came from a client or an upstream: a value of the wrong
type reads as empty instead of raising, so a malformed field costs that
field, not the answer."""

import json
from typing import Any

import orjson

Json = dict[str, Any]


def as_str(value: Any) -> str:
    return value if isinstance(value, str) else ""


def as_obj(value: Any) -> Json:
    """`value` if it is a JSON object, else an empty one."""
    return value if isinstance(value, dict) else {}


def as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def compact_json(value: Any) -> str:
    """`value` as compact JSON text, whatever it holds."""
    try:
        return orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS).decode()
    except orjson.JSONEncodeError:  # integers past 64 bits, or a value JSON cannot hold
        return json.dumps(value, ensure_ascii=False, separators=(",", ":"), default=str)
