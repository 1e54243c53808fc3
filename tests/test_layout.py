"""The package's layout says its architecture: folders are layers, each imports only the layers
below it (:data:`MAY_IMPORT`), no module imports one that imports it back, and the session runner
knows nothing of JetStream mode (which builds on the runner, not inside it)."""

from __future__ import annotations

import ast
from pathlib import Path

import stt_service

PACKAGE = Path(stt_service.__file__).parent
ROOT = PACKAGE.parent

# each layer (a folder, or a module at the top) and the layers it may import
BASE = {
    "stt_service",
    "stt_service.audio",
    "stt_service.protocol",
    "stt_service.config",
    "stt_service.floods",
}
MAY_IMPORT: dict[str, set[str]] = {
    "stt_service": set(),
    "stt_service.config": {"stt_service"},
    "stt_service.audio": {"stt_service"},
    "stt_service.floods": {"stt_service"},
    "stt_service.protocol": {"stt_service", "stt_service.audio"},
    "stt_service.telemetry": BASE,
    "stt_service.speech": BASE,
    "stt_service.bus": BASE,
    # the sans-I/O core: of the recognizers, only their one small interface
    "stt_service.session": BASE | {"stt_service.speech", "stt_service.backends.base"},
    "stt_service.backends": BASE | {"stt_service.backends"},
    "stt_service.emulator": BASE | {"stt_service.backends", "stt_service.bus"},
    "stt_service.runner": BASE
    | {
        "stt_service.telemetry",
        "stt_service.speech",
        "stt_service.bus",
        "stt_service.session",
        "stt_service.backends",
        "stt_service.jetstream",  # serve.inlet_for picks the way in; the runner itself does not
    },
    "stt_service.jetstream": BASE
    | {
        "stt_service.telemetry",
        "stt_service.bus",
        "stt_service.session",
        "stt_service.backends",
        "stt_service.runner",
    },
    "stt_service.commands": {"*"},
}


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
    assert "stt_service.runner.worker" in graph and "stt_service.jetstream.inlet" in graph
    circles = set()
    for module, targets in graph.items():
        for target in targets:
            back = _reaches(graph, target, module)
            if back is not None:
                circles.add(" -> ".join([module, *back]))
    assert not circles, "import circles:\n" + "\n".join(sorted(circles))


def test_the_session_runner_knows_nothing_of_jetstream_mode() -> None:
    graph = _imports()
    path = _reaches(graph, "stt_service.runner.worker", "stt_service.jetstream")
    inlet = _reaches(graph, "stt_service.runner.worker", "stt_service.jetstream.inlet")
    assert path is None and inlet is None, f"the runner reaches JetStream mode: {path or inlet}"


def _layer(module: str) -> str:
    """``stt_service.session.core`` -> ``stt_service.session``; top modules are their own."""
    parts = module.split(".")
    return ".".join(parts[:2])


def _allowed(importer: str, target: str) -> bool:
    layer, allowed = _layer(importer), MAY_IMPORT[_layer(importer)]
    if "*" in allowed or _layer(target) == layer:
        return True
    return _layer(target) in allowed or target in allowed


def test_every_layer_imports_only_the_layers_below_it() -> None:
    graph = _imports()
    unknown = {_layer(m) for m in graph} - set(MAY_IMPORT)
    assert not unknown, f"modules outside any layer (add them to MAY_IMPORT): {sorted(unknown)}"
    wrong = sorted(
        f"{module} -> {target}"
        for module, targets in graph.items()
        for target in targets
        if not _allowed(module, target)
    )
    assert not wrong, "imports across the layers:\n" + "\n".join(wrong)


def test_the_benchmarks_import_nothing_from_the_tests() -> None:
    found = []
    for path in sorted((ROOT / "bench").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            names = (
                [a.name for a in node.names]
                if isinstance(node, ast.Import)
                else [node.module or ""]
                if isinstance(node, ast.ImportFrom)
                else []
            )
            found += [f"{path.name}: {n}" for n in names if n == "tests" or n.startswith("tests.")]
    assert not found, "bench/ imports tests/:\n" + "\n".join(found)


def test_no_module_or_class_is_longer_than_a_reader_can_hold() -> None:
    """About 450 lines a module and 400 a class: a file that grows two concerns becomes two."""
    long = []
    for path in sorted(PACKAGE.rglob("*.py")):
        text = path.read_text()
        if (n := len(text.splitlines())) > 470:
            long.append(f"{path.relative_to(ROOT)}: {n} lines")
        for node in ast.walk(ast.parse(text)):
            if not isinstance(node, ast.ClassDef):
                continue
            if (size := (node.end_lineno or node.lineno) - node.lineno + 1) > 420:
                long.append(f"{path.relative_to(ROOT)}: class {node.name}: {size} lines")
    assert not long, "split these by concern:\n" + "\n".join(long)
