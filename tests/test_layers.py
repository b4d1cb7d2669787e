"""The package's layers: no module imports another that imports it back, and storage knows nothing of retrieval."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _module(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph() -> dict[str, set[str]]:
    """``module -> the project modules it imports``, at the top or inside functions alike."""
    modules = {_module(p): p for folder in ("qa", "embeddings") for p in (ROOT / folder).rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        found: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                targets = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
            elif isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            else:
                continue
            found.update(t for t in targets if t in modules and t != name)
        graph[name] = found
    return graph


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def _is_package_of(a: str, b: str) -> bool:
    # A package's __init__ naming its own submodules is how it exports them, not a cycle.
    return b.startswith(a + ".")


def test_no_module_imports_itself_back():
    graph = import_graph()
    graph = {m: {t for t in ts if not _is_package_of(m, t)} for m, ts in graph.items()}
    assert "qa.storage.reader" in graph and "qa.search" in graph  # the walk found the package
    assert _cycle(graph) is None, " -> ".join(_cycle(graph))


def test_storage_imports_only_records_and_embeddings():
    graph = import_graph()
    for module, targets in graph.items():
        if module.startswith("qa.storage"):
            outside = {t for t in targets if not t.startswith(("qa.storage", "embeddings")) and t != "qa.records"}
            assert not outside, f"{module} imports {sorted(outside)}"


def test_retrieval_reads_an_index_only_through_the_storage_package():
    graph = import_graph()
    for module in ("qa.search", "qa.cite", "qa.verify"):
        storage = {t for t in graph[module] if t.startswith("qa.storage")}
        assert storage <= {"qa.storage"}, f"{module} reaches into {sorted(storage)}"
