"""Every error code the gateway can answer with is in the README's error
table: clients' scripts match on these codes, so one that is not written
down is one a user can only find by being hit by it."""

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
APPS = ("accounts", "billing", "cachestore", "proxy", "gateway")


def _raised_codes() -> dict[str, str]:
    """Each code given to GatewayError as a literal, and one file raising it."""
    codes: dict[str, str] = {}
    for app in APPS:
        for path in (ROOT / app).rglob("*.py"):
            if {"tests", "migrations"} & set(path.parts):
                continue
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if not isinstance(node, ast.Call) or len(node.args) < 2:
                    continue
                name = getattr(node.func, "id", getattr(node.func, "attr", ""))
                status, code = node.args[0], node.args[1]
                # GatewayError(status, code, ...), or an error class's super().__init__(status, code, ...)
                raises = name.endswith("GatewayError") or (
                    name == "__init__" and isinstance(status, ast.Constant) and isinstance(status.value, int)
                )
                if raises and isinstance(code, ast.Constant) and isinstance(code.value, str):
                    codes.setdefault(code.value, str(path.relative_to(ROOT)))
    return codes


def _documented_codes() -> set[str]:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    table = readme[readme.index("| status | code | when |") :]
    table = table[: table.index("\n\n")]
    return {code for row in table.splitlines() for code in re.findall(r"`([a-z_]+)`", row.split("|")[2])}


def test_every_error_code_the_gateway_raises_is_in_the_readmes_error_table() -> None:
    raised = _raised_codes()
    assert {"model_not_found", "guardrail_blocked", "upstream_capacity"} <= raised.keys()  # the scan finds them
    missing = {code: path for code, path in raised.items() if code not in _documented_codes()}
    assert missing == {}, f"codes raised but not in the README's error table: {missing}"
