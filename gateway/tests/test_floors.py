"""The apps import downward only, and no module imports itself back in a circle.

Floors, lowest first: the shared kernel (gateway.kernel, which imports no
app), then accounts, billing, cachestore, proxy and gateway. A lower floor
that must react to a higher one offers a hook (a signal, a registry, a
callback passed in); cross-app foreign keys are strings. Every import
counts: at module level, inside a function, under TYPE_CHECKING. Tests and
migrations are not floors: an end-to-end test drives the whole stack, and a
migration names other apps' migrations by string.
"""

import ast
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
APPS = ("accounts", "billing", "cachestore", "proxy", "gateway")
KERNEL = "gateway.kernel"


def floor(module: str) -> int | None:
    """0 for the kernel, 1 to 5 for the apps, None for anything else (Django, libraries)."""
    if module == KERNEL or module.startswith(KERNEL + "."):
        return 0
    app = module.split(".")[0]
    return APPS.index(app) + 1 if app in APPS else None


def modules() -> Iterator[tuple[str, Path]]:
    for app in APPS:
        for path in sorted((ROOT / app).rglob("*.py")):
            parts = path.relative_to(ROOT).with_suffix("").parts
            if {"tests", "migrations"} & set(parts):
                continue
            yield ".".join(parts[:-1] if parts[-1] == "__init__" else parts), path


def imports(path: Path, *, top_level_only: bool = False) -> Iterator[tuple[int, str]]:
    tree = ast.parse(path.read_text())
    nodes = tree.body if top_level_only else ast.walk(tree)
    for node in nodes:
        if isinstance(node, ast.Import):
            yield from ((node.lineno, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            # `from proxy import dialects` imports the module proxy.dialects: the
            # names are kept, the graph tells modules from other names
            yield from ((node.lineno, f"{node.module}.{alias.name}") for alias in node.names)


def test_every_import_goes_to_the_same_floor_or_a_lower_one() -> None:
    upward = {
        f"{path.relative_to(ROOT)}:{line} imports {name.rpartition('.')[0]}"
        for module, path in modules()
        for line, name in imports(path)
        if (mine := floor(module)) is not None
        and (theirs := floor(name)) is not None
        and theirs > mine
        and not _same_app(module, name)
    }
    assert not upward, "\n".join(sorted(upward))


def test_the_kernel_imports_no_app() -> None:
    found = {
        f"{path.relative_to(ROOT)}:{line} imports {name}"
        for module, path in modules()
        if floor(module) == 0
        for line, name in imports(path)
        if floor(name) not in (None, 0)
    }
    assert not found, "\n".join(sorted(found))


def test_no_modules_import_each_other_in_a_circle() -> None:
    known = dict(modules())
    graph = {
        module: {
            found for _, name in imports(path, top_level_only=True) if (found := _module_of(name, known)) != module
        }
        for module, path in known.items()
    }
    graph = {module: {name for name in names if name is not None} for module, names in graph.items()}
    circle = _a_circle(graph)
    assert circle is None, " -> ".join(circle or [])


def test_the_floor_check_sees_the_tree() -> None:
    names = {module for module, _ in modules()}
    assert {"accounts.snapshots", "billing.meter", "cachestore.store", "proxy.forward", "gateway.asgi"} <= names
    assert any(floor(name) == 0 for name in names)


def _module_of(name: str, known: dict[str, Path]) -> str | None:
    """The module an imported name lives in: `gateway.kernel.context.UsageEvent` is gateway.kernel.context."""
    while name and name not in known:
        name = name.rpartition(".")[0]
    return name or None


def _same_app(module: str, name: str) -> bool:
    """gateway's own modules may import the kernel inside it, and vice versa is caught above."""
    return floor(module) == floor(name)


def _a_circle(graph: dict[str, set[str]]) -> list[str] | None:
    done: set[str] = set()
    for start in sorted(graph):
        stack: list[tuple[str, Iterator[str]]] = [(start, iter(sorted(graph[start])))]
        path, on_path = [start], {start}
        if start in done:
            continue
        while stack:
            node, children = stack[-1]
            child = next(children, None)
            if child is None:
                stack.pop()
                on_path.discard(path.pop())
                done.add(node)
            elif child in on_path:
                return [*path[path.index(child) :], child]
            elif child not in done:
                stack.append((child, iter(sorted(graph[child]))))
                path.append(child)
                on_path.add(child)
    return None
