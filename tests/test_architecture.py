"""The tree's layering, checked: no import cycle between modules (imports inside functions
included), and every import points to the same room or one below it (the README's architecture
section draws the same rooms)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("esc_agents", "graphs", "training", "prompts")

# Lowest first. A module belongs to the first room whose prefix names it or a package above it.
ROOMS = [
    ("core", ["esc_agents.core", "esc_agents"]),
    ("inputs", ["esc_agents.config", "esc_agents.datasets", "esc_agents.prompts", "prompts"]),
    ("models", ["esc_agents.models"]),
    ("roles", ["esc_agents.roles"]),
    ("graphs", ["graphs"]),
    ("runs", ["esc_agents.engine", "esc_agents.jobs", "esc_agents.provenance", "esc_agents.runs", "esc_agents.simulate"]),
    ("training shared", ["training.backbones", "training.run_folder", "training.contexts", "training"]),
    ("stage 1: futures", ["training.futures"]),
    ("stage 2: reward model", ["training.reward_model"]),
    ("stage 3: grpo", ["training.grpo"]),
    ("evaluation", ["esc_agents.evaluation"]),
    ("cli", ["esc_agents.cli"]),
]


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def project_modules() -> dict[str, Path]:
    return {module_name(path): path for package in PACKAGES for path in (ROOT / package).rglob("*.py")}


def imports_of(path: Path, name: str, modules: dict[str, Path]) -> set[str]:
    """Project modules that `path` imports anywhere (top level or inside a function)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else []))
            # `from pkg import module` imports the module; `from module import name` the module
            targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base for alias in node.names]
        else:
            continue
        for target in targets:
            while target and target not in modules:
                target = target.rpartition(".")[0]
            if target and target != name:
                found.add(target)
    return found


def room_of(name: str) -> int:
    best = None
    for index, (_, prefixes) in enumerate(ROOMS):
        for prefix in prefixes:
            if name == prefix or name.startswith(prefix + "."):
                if best is None or len(prefix) > best[1]:
                    best = (index, len(prefix))
    assert best is not None, f"{name} is in no room: add it to ROOMS"
    return best[0]


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    modules = project_modules()
    return {name: imports_of(path, name, modules) for name, path in modules.items()}


def test_the_walker_sees_real_imports(graph):
    # guards the walker itself: known edges of the tree, top-level and inside a function
    assert "esc_agents.core.errors" in graph["esc_agents.config"]
    assert "training.reward_model.scorer" in graph["training.grpo.trainer"]
    assert "training.backbones" in graph["training.reward_model.scorer"]  # imported inside a method
    assert "esc_agents.models.local_server" in graph["training.backbones"]  # likewise


def test_no_import_cycle(graph):
    # Tarjan's strongly connected components; any component of two or more modules is a cycle
    index, low, stack, on_stack, cycles = {}, {}, [], set(), []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in graph[node]:
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    assert not cycles, f"import cycles: {cycles}"


def test_every_import_points_down(graph):
    upward = [f"{name} ({ROOMS[room_of(name)][0]}) imports {target} ({ROOMS[room_of(target)][0]})"
              for name, targets in sorted(graph.items()) for target in sorted(targets)
              if room_of(target) > room_of(name)]
    assert not upward, "imports pointing up:\n" + "\n".join(upward)


def test_a_planted_cycle_and_an_upward_import_are_caught(tmp_path, graph):
    planted = {**graph, "esc_agents.core.errors": graph["esc_agents.core.errors"] | {"esc_agents.cli.main"}}
    assert room_of("esc_agents.cli.main") > room_of("esc_agents.core.errors")
    with pytest.raises(AssertionError, match="import cycles"):
        test_no_import_cycle(planted)
    with pytest.raises(AssertionError, match="pointing up"):
        test_every_import_points_down(planted)
