"""The simulator's modules import each other in one direction only: no import cycle inside sim/ (the expert
gets what it needs from the environment as an ExpertWorld instead of importing it)."""
from __future__ import annotations

import ast
from pathlib import Path

SIM = Path(__file__).resolve().parents[1] / "mechanic_rl_ros" / "sim"


def _sim_imports(f: Path) -> set[str]:
    """The sibling modules ``f`` imports (function-level and TYPE_CHECKING imports included)."""
    found = set()
    for node in ast.walk(ast.parse(f.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            parts = node.module.split(".")
            if parts[:2] == ["mechanic_rl_ros", "sim"]:
                names = parts[2:3] or [a.name for a in node.names]
                found |= {n for n in names if (SIM / f"{n}.py").exists()}
    return found - {f.stem}


def test_no_import_cycle_in_sim():
    graph = {f.stem: _sim_imports(f) for f in SIM.glob("*.py") if f.stem != "__init__"}
    cycles = []

    def visit(module: str, path: list[str]) -> None:
        for dep in sorted(graph[module]):
            if dep in path:
                cycles.append(" -> ".join(path[path.index(dep):] + [dep]))
            else:
                visit(dep, path + [dep])

    for module in graph:
        visit(module, [module])
    assert not cycles, "import cycles in sim/:\n" + "\n".join(sorted(set(cycles)))


def test_the_expert_knows_no_environment():
    assert "env" not in _sim_imports(SIM / "expert.py")
    assert "env." not in (SIM / "expert.py").read_text().replace("environment", "")
