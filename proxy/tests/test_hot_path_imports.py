"""The request path imports no ORM: the database belongs to loaders, imported when they first run.

The request path is what the pipeline (proxy.pipeline) and the cache lane in
front of Django (gateway.cache_lane) import at module level, followed to the
end. No proxy or kernel module on it may import django.db or a models
module, at module level or inside a function: a loader (the catalog's, say)
is a module of its own, imported inside the function that starts a load.
"""

import ast
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
ENTRIES = ("proxy.pipeline", "gateway.cache_lane")
GUARDED = ("proxy.", "gateway.kernel.")  # the apps above the loaders: accounts and billing load the snapshots


def module_path(module: str) -> Path | None:
    base = ROOT.joinpath(*module.split("."))
    for path in (base.with_suffix(".py"), base / "__init__.py"):
        if path.exists():
            return path
    return None


def imports(path: Path, *, top_level_only: bool) -> Iterator[str]:
    tree = ast.parse(path.read_text())
    for node in tree.body if top_level_only else ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node.module
            yield from (f"{node.module}.{alias.name}" for alias in node.names)


def request_path() -> dict[str, Path]:
    """Every module of ours the entries import at module level, transitively."""
    found: dict[str, Path] = {}
    todo = list(ENTRIES)
    while todo:
        module = todo.pop()
        path = module_path(module)
        if module in found or path is None:
            continue
        found[module] = path
        todo.extend(imports(path, top_level_only=True))
    return found


def test_the_guard_sees_the_request_path() -> None:
    modules = set(request_path())
    assert {"proxy.pipeline", "proxy.forward", "proxy.streaming", "proxy.routing", "proxy.usage"} <= modules
    assert {"accounts.auth", "proxy.providers.openai", "gateway.kernel.context"} <= modules
    assert "proxy.catalog_loader" not in modules and "proxy.models" not in modules


def test_no_request_path_module_imports_the_orm_or_models() -> None:
    offenders = {
        f"{path.relative_to(ROOT)}: {name}"
        for module, path in request_path().items()
        if module.startswith(GUARDED)
        for name in imports(path, top_level_only=False)
        if name.startswith("django.db") or name.endswith(".models") or ".models." in name
    }
    assert not offenders, sorted(offenders)
