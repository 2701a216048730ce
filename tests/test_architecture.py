"""workers/ml stays pure (no Django, Celery or ORM), checked by AST as well as by import-linter."""

import ast
from pathlib import Path

ML = Path(__file__).resolve().parent.parent / "workers" / "ml"
FORBIDDEN = (
    "django",
    "rest_framework",
    "celery",
    "kombu",
    "annotations",
    "hitl",
    "workers.services",
    "workers.tasks",
    "workers.models",
)


def _imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def test_ml_core_imports_nothing_from_the_service_side():
    files = list(ML.rglob("*.py"))
    assert len(files) > 3
    offenders = {
        str(f.relative_to(ML)): sorted(
            n for n in _imports(f) if n.split(".")[0] in FORBIDDEN or n.startswith(FORBIDDEN)
        )
        for f in files
    }
    assert not {k: v for k, v in offenders.items() if v}
