"""The request path's modules import no ORM: the database is for loaders only."""

import ast
from pathlib import Path

PROXY = Path(__file__).resolve().parents[1]
# Modules that read or write the admin's tables, by design off the request path.
OFF_THE_REQUEST_PATH = {"models.py", "admin.py", "apps.py", "catalog.py", "services.py", "apply.py", "secrets.py"}


def hot_path_modules() -> list[Path]:
    return [
        path
        for path in PROXY.rglob("*.py")
        if path.name not in OFF_THE_REQUEST_PATH
        and not {"tests", "migrations", "management"} & set(path.relative_to(PROXY).parts)
    ]


def imported_modules(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def test_the_guard_sees_the_request_path() -> None:
    names = {p.name for p in hot_path_modules()}
    assert {"api.py", "auth.py", "forward.py", "streaming.py", "routing.py", "usage.py", "openai.py"} <= names


def test_no_request_path_module_imports_the_orm_or_models() -> None:
    offenders = {
        f"{path.relative_to(PROXY)}: {name}"
        for path in hot_path_modules()
        for name in imported_modules(path)
        if name.startswith("django.db") or name.endswith(".models") or ".models." in name
    }
    assert not offenders, sorted(offenders)
