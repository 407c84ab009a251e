"""What the tests of the Ollama translators share. The `ollama` package,
when installed, checks fidelity: its pydantic types parse every answer, as
Ollama's own client does; the tests that use them skip without it."""

from typing import Any

import pytest

CREATED = "2025-01-02T03:04:05.000000Z"


def ollama_types() -> Any:
    return pytest.importorskip("ollama._types")
