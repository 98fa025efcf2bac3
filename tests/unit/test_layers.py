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


# Statement builders: a module that imports one writes SQL, which belongs in app/db.
SQL_BUILDERS = {"select", "insert", "update", "delete", "exists", "func", "text", "tuple_"}


def _imports(path: Path) -> list[str]:
    names = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.append(node.module)
            if node.module == "app.web.routes":  # from app.web.routes import steer
                names += [f"app.web.routes.{alias.name}" for alias in node.names]
    return names


def _sql_written(folder: Path) -> list[str]:
    return [
        f"{path.relative_to(folder)} builds SQL with {alias.name}"
        for path in sorted(folder.rglob("*.py"))
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("sqlalchemy")
        for alias in node.names
        if alias.name in SQL_BUILDERS
    ]


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


def test_no_route_module_imports_another():
    """Shared lookups live in app/web/deps.py and shared view code in app/web/views.py."""
    assert _violations(APP / "web" / "routes", ("app.web.routes",)) == []


def test_the_route_rule_detects_a_violation(tmp_path):
    (tmp_path / "a.py").write_text("from app.web.routes.lists import feature_or_404\n")
    (tmp_path / "b.py").write_text("from app.web.routes import steer\n")
    assert _violations(tmp_path, ("app.web.routes",)) == [
        "a.py imports app.web.routes.lists",
        "b.py imports app.web.routes",
        "b.py imports app.web.routes.steer",
    ]


def test_sql_is_written_only_in_the_db_layer():
    assert [v for v in _sql_written(APP) if not v.startswith("db/")] == []


def test_the_sql_rule_detects_a_violation(tmp_path):
    (tmp_path / "job.py").write_text("from sqlalchemy import Engine, select\n")
    assert _sql_written(tmp_path) == ["job.py builds SQL with select"]


def _templates_rendered(path: Path) -> list[str]:
    """Template names (string literals ending in .html) a module passes around."""
    return [
        node.value
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.Constant)
        and isinstance(node.value, str)
        and node.value.endswith(".html")
    ]


def _foreign_templates(routes: Path) -> list[str]:
    return [
        f"{path.name} renders {name}"
        for path in sorted(routes.glob("*.py"))
        if path.name != "__init__.py"
        for name in _templates_rendered(path)
        if not name.startswith(f"{path.stem}/")
    ]


def test_templates_mirror_routes():
    """A route module renders only templates/<module>/: its pages are index.html (the family's
    landing page), show.html (one item) or named for what they show; partials start with _."""
    routes = APP / "web" / "routes"
    assert _foreign_templates(routes) == []
    templates = APP.parent / "templates"
    for path in sorted(routes.glob("*.py")):
        for name in _templates_rendered(path):
            assert (templates / name).is_file(), name


def test_the_template_rule_detects_a_violation(tmp_path):
    (tmp_path / "steer.py").write_text('render("features/show.html")\n')
    assert _foreign_templates(tmp_path) == ["steer.py renders features/show.html"]
