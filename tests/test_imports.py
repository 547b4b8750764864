"""No import circles between cliplab's or the benchmarks' modules (function-level imports included), and
nothing edits sys.path: `python -m bench` and the installed package are the ways in."""

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = {"cliplab": ROOT / "src" / "cliplab", "bench": ROOT / "bench"}


def module_name(path: Path) -> str:
    for package, root in PACKAGES.items():
        if path.is_relative_to(root):
            parts = [package, *path.relative_to(root).with_suffix("").parts]
            return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
    raise ValueError(path)


def import_graph() -> dict[str, set[str]]:
    files = {module_name(p): p for root in PACKAGES.values() for p in root.rglob("*.py")}
    graph = {}
    for name, path in files.items():
        targets = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                candidates = [f"{node.module}.{a.name}" for a in node.names] + [node.module]
            elif isinstance(node, ast.Import):
                candidates = [a.name for a in node.names]
            else:
                continue
            # the most specific module named (`from a.b import c` may import module a.b.c)
            targets |= {
                next(c for c in cands if c in files)
                for cands in ([c] for c in candidates)
                if cands[0] in files
            }
        # a package's own __init__ importing its submodules is not a circle back into it
        graph[name] = {t for t in targets if t != name and not name.startswith(t + ".")}
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt) :] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        state[node] = 2
        stack.pop()
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_no_import_circles():
    cycle = find_cycle(import_graph())
    assert cycle is None, " -> ".join(cycle)


def test_nothing_edits_sys_path():
    offenders = [
        str(p.relative_to(ROOT))
        for root in (*PACKAGES.values(), ROOT / "tests", ROOT / "src")
        for p in root.rglob("*.py")
        if p != Path(__file__) and "sys.path." in p.read_text()
    ]
    assert offenders == []
