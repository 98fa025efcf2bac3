"""The layer rule: app/core (and app/demo, which builds on it) import no web, db or pipeline
code; app never imports tests."""

import ast
from pathlib import Path

APP = Path(__file__).resolve().parents[2] / "app"
CORE_BANNED = (
    "fastapi",
    "starlette",
    "sqlalchemy",
    "alembic",
    "jinja2",
    "uvicorn",
    "httpx",
    "app.web",
    "app.db",
    "app.pipeline",
    "app.autointerp",
    "app.cli",
    "app.settings",
)


def _imports(path: Path) -> list[str]:
    names = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.append(node.module)
    return names


def _violations(folder: Path, banned: tuple[str, ...]) -> list[str]:
    return [
        f"{path.relative_to(folder)} imports {name}"
        for path in sorted(folder.rglob("*.py"))
        for name in _imports(path)
        if any(name == b or name.startswith(b + ".") for b in banned)
    ]


def test_core_is_pure_torch_and_numpy():
    assert _violations(APP / "core", CORE_BANNED) == []


def test_demo_world_builds_only_on_core():
    assert _violations(APP / "demo", CORE_BANNED) == []


def test_app_never_imports_tests():
    assert _violations(APP, ("tests",)) == []


def test_the_rule_detects_a_violation(tmp_path):
    (tmp_path / "bad.py").write_text("from fastapi import FastAPI\nimport app.db.models\n")
    assert _violations(tmp_path, CORE_BANNED) == [
        "bad.py imports fastapi",
        "bad.py imports app.db.models",
    ]


def test_db_layer_knows_nothing_of_torch_web_or_jobs():
    banned = ("torch", "transformers", "fastapi", "jinja2", "app.web", "app.pipeline", "app.cli")
    assert _violations(APP / "db", banned) == []
