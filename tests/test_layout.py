"""The package's layout says its architecture: no module imports one that imports it back, and
the session runner knows nothing of JetStream mode (which builds on the runner, not inside it)."""

from __future__ import annotations

import ast
from pathlib import Path

import stt_service

PACKAGE = Path(stt_service.__file__).parent


def _module(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports() -> dict[str, set[str]]:
    """Every module -> the package's modules it imports, at the top or inside a function."""
    graph: dict[str, set[str]] = {}
    for path in PACKAGE.rglob("*.py"):
        name = _module(path)
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        found: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                found.update(a.name for a in node.names if a.name.startswith("stt_service"))
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                    target = f"{base}.{node.module}" if node.module else base
                else:
                    target = node.module or ""
                if target.startswith("stt_service"):
                    found.add(target)
        graph[name] = found
    modules = set(graph)
    # "from .backends import base" names a module too; keep what exists, minus self
    return {m: {t for t in ts if t in modules and t != m} for m, ts in graph.items()}


def _reaches(graph: dict[str, set[str]], start: str, goal: str) -> list[str] | None:
    stack, seen = [(start, [start])], {start}
    while stack:
        node, path = stack.pop()
        for nxt in graph.get(node, ()):
            if nxt == goal:
                return [*path, nxt]
            if nxt not in seen:
                seen.add(nxt)
                stack.append((nxt, [*path, nxt]))
    return None


def test_no_module_imports_one_that_imports_it_back() -> None:
    graph = _imports()
    assert "stt_service.worker" in graph and "stt_service.jetstream.inlet" in graph
    circles = set()
    for module, targets in graph.items():
        for target in targets:
            back = _reaches(graph, target, module)
            if back is not None:
                circles.add(" -> ".join([module, *back]))
    assert not circles, "import circles:\n" + "\n".join(sorted(circles))


def test_the_session_runner_knows_nothing_of_jetstream_mode() -> None:
    graph = _imports()
    path = _reaches(graph, "stt_service.worker", "stt_service.jetstream")
    inlet = _reaches(graph, "stt_service.worker", "stt_service.jetstream.inlet")
    assert path is None and inlet is None, f"the runner reaches JetStream mode: {path or inlet}"
