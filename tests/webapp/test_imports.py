"""The web app's import rules (DESIGN.md): imports go down the layers (a lower app tells a higher one
through a signal), and no private name (`_x`) is imported from another module."""

import ast
from pathlib import Path

import pytest

WEBAPP = Path(__file__).resolve().parents[2] / "webapp"
# An app may import from the apps below it, never from those above.
ABOVE = {
    "experiments": ("workers", "compare", "ratings", "reports", "api"),  # the domain never imports the runtime
    "workers": ("compare", "ratings", "reports", "api"),
    "compare": ("reports", "api"),
    "ratings": ("reports", "api"),
    "reports": ("api",),
}


def imports(path: Path):
    """(module imported, names) of every import in the file, function-level ones included."""
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node.module, [a.name for a in node.names]
        elif isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, []


def test_training_never_imports_django_or_the_web_app():
    training = WEBAPP.parent / "training"
    bad = [(str(p.relative_to(training)), module) for p in sorted(training.rglob("*.py"))
           for module, _ in imports(p) if module.split(".")[0] in ("django", "webapp")]
    assert bad == []


def sources():
    return sorted(p for p in WEBAPP.rglob("*.py") if "migrations" not in p.parts)


@pytest.mark.parametrize("app", sorted(ABOVE))
def test_no_upward_imports(app):
    bad = [(str(p.relative_to(WEBAPP)), module) for p in sorted((WEBAPP / app).rglob("*.py"))
           for module, _ in imports(p) if any(module.startswith(f"webapp.{up}") for up in ABOVE[app])]
    assert bad == []


def test_no_private_name_is_imported_from_another_module():
    bad = [(str(p.relative_to(WEBAPP)), module, name) for p in sources() for module, names in imports(p)
           if module.startswith("webapp") for name in names if name.startswith("_")]
    assert bad == []
