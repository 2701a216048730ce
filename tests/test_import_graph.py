"""The import graph of our own code, function-level imports included: no cycle between modules, and none
between the packages of an app (e.g. workers.services <-> workers.tasks); the web process does not import
torch. The app directions themselves are import-linter contracts (pyproject.toml, run by the test command)."""

import ast
import os
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("annotations", "workers", "hitl")


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> dict[str, Path]:
    return {
        _module_name(p): p
        for pkg in PACKAGES
        for p in (ROOT / pkg).rglob("*.py")
        if "migrations" not in p.parts
    }


def _resolve(name: str, modules: dict[str, Path]) -> str | None:
    while name and name not in modules:
        name = name.rpartition(".")[0]
    return name or None


def _targets(node: ast.AST, package: str) -> list[str]:
    """Every dotted name an import statement may load (`from a import b` may load module a.b)."""
    if isinstance(node, ast.Import):
        return [a.name for a in node.names]
    if not isinstance(node, ast.ImportFrom):
        return []
    base = node.module or ""
    if node.level:
        parts = package.split(".")[: len(package.split(".")) - node.level + 1]
        base = ".".join([*parts, base] if base else parts)
    return [base, *(f"{base}.{a.name}" for a in node.names)]


def import_graph() -> dict[str, set[str]]:
    """module -> the modules of ours it imports, at module level or inside functions."""
    modules = _modules()
    graph: dict[str, set[str]] = defaultdict(set)
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text())):
            for target in _targets(node, package):
                resolved = _resolve(target, modules)
                if resolved and resolved != name and not name.startswith(resolved + "."):
                    graph[name].add(resolved)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one node (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    for start in list(graph):
        if start in index:
            continue
        work = [(start, iter(sorted(graph.get(start, ()))))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.get(child, ())))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


def collapse(graph: dict[str, set[str]], depth: int) -> dict[str, set[str]]:
    """The graph between packages `depth` names deep (annotations.services, workers.ml.explain, ...)."""
    out: dict[str, set[str]] = defaultdict(set)
    for source, targets in graph.items():
        a = ".".join(source.split(".")[:depth])
        for target in targets:
            b = ".".join(target.split(".")[:depth])
            if a != b and a.split(".")[0] == b.split(".")[0]:  # inside one top-level package
                out[a].add(b)
    return out


def test_the_graph_sees_function_level_imports():
    graph = import_graph()
    assert "annotations.services.queue" in graph["annotations.tasks"]  # imported inside the task function
    assert "hitl.core.outbox" in graph["hitl.core.tasks"]


def test_cycle_finder_finds_a_known_cycle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycle_between_modules():
    assert cycles(import_graph()) == []


def test_no_import_cycle_between_the_packages_of_an_app():
    graph = import_graph()
    for depth in (2, 3):
        assert cycles(collapse(graph, depth)) == [], f"packages {depth} names deep"


def test_the_web_process_does_not_import_torch():
    """`import hitl.wsgi` with the default settings, then every view the URL conf routes to: no torch
    (interactive explanations run on a worker unless HITL_EXPLAIN_IN_WEB is set)."""
    code = (
        "import sys, hitl.wsgi\n"
        "from django.urls import get_resolver\n"
        "def walk(r):\n"
        "    for p in r.url_patterns:\n"
        "        walk(p) if hasattr(p, 'url_patterns') else None\n"
        "walk(get_resolver())\n"
        "print('torch' in sys.modules, len(get_resolver().reverse_dict))\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HITL_EXPLAIN", "DJANGO_SETTINGS"))}
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-3000:]
    torch_loaded, routes = out.stdout.split()
    assert int(routes) > 30  # the URL conf was really loaded
    assert torch_loaded == "False"


def test_the_task_name_registry_is_every_registered_task():
    """Services enqueue by name (hitl.core.task_names): each name is a task Celery registers, and every task
    of ours has its name there."""
    from hitl.celery import app
    from hitl.core import task_names

    app.loader.import_default_modules()  # autodiscovery: hitl.core.tasks, annotations.tasks, workers.tasks
    ours = {name for name in app.tasks if name.startswith(PACKAGES)}
    assert ours == set(task_names.ALL_TASKS)


def test_every_route_and_beat_entry_names_real_tasks_on_a_queue_the_workers_consume():
    """A typo in CELERY_TASK_ROUTES or CELERY_BEAT_SCHEDULE fails here, not silently in production (a beat
    entry for a task nobody registered, a route pattern that matches nothing, a queue no worker reads)."""
    from fnmatch import fnmatchcase

    from django.conf import settings

    from hitl.celery import app
    from hitl.core import task_names
    from hitl.core.lanes import ALL_QUEUES

    app.loader.import_default_modules()
    for entry in settings.CELERY_BEAT_SCHEDULE.values():
        assert entry["task"] in task_names.ALL_TASKS and entry["task"] in app.tasks, entry
    routes = settings.CELERY_TASK_ROUTES
    for pattern in routes:
        assert any(fnmatchcase(name, pattern) for name in task_names.ALL_TASKS), (
            f"route {pattern} matches no task"
        )
    consumed = set(ALL_QUEUES)
    for name in task_names.ALL_TASKS:
        queue = next((r["queue"] for p, r in routes.items() if fnmatchcase(name, p)), "default")
        assert queue in consumed, f"{name} goes to queue {queue!r}, which no lane's worker reads"


def test_the_run_command_starts_a_worker_for_exactly_the_lanes_of_hitl_core_lanes():
    import ast

    from hitl.core.lanes import ALL_QUEUES, LANES

    tree = ast.parse((ROOT / "dev.py").read_text())
    lanes = next(
        ast.literal_eval(node.value)
        for node in tree.body
        if isinstance(node, ast.Assign) and any(getattr(t, "id", "") == "LANES" for t in node.targets)
    )
    assert {lane: tuple(q.split(",")) for lane, q in lanes.items()} == LANES
    assert len(ALL_QUEUES) == len(set(ALL_QUEUES))  # no queue in two lanes
