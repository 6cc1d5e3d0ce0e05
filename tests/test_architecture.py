"""The shape of helpers/: subpackages by stage, lower layers never import higher ones, no import cycles."""
import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
HELPERS = ROOT / "helpers"
# lowest first; a module may import from its own layer or a lower one
LAYERS = {"helpers.paths": 0, "helpers.profiles": 0, "helpers.recipes": 0, "helpers.runtime": 0,
          "helpers.data": 1, "helpers.models": 2, "helpers.training": 3,
          "helpers.evaluation": 4, "helpers.reporting": 5, "helpers.pipeline": 6, "helpers.bench": 6,
          "helpers.gpu_window_steps": 6, "helpers": 6}


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_module_name(p): p for p in sorted(HELPERS.rglob("*.py"))}


def _imports(name: str) -> set[str]:
    """Every helpers module that ``name`` imports, at the top or inside a function."""
    found = set()
    for node in ast.walk(ast.parse(MODULES[name].read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names if alias.name.startswith("helpers")}
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("helpers"):
            for alias in node.names:  # `from helpers.training import runs` imports helpers.training.runs
                sub = f"{node.module}.{alias.name}"
                found.add(sub if sub in MODULES else node.module)
    return {m for m in found if m in MODULES and m != name}


def _layer(name: str) -> int:
    return max(rank for prefix, rank in LAYERS.items() if name == prefix or name.startswith(prefix + "."))


GRAPH = {name: _imports(name) for name in MODULES}


def test_lower_layers_never_import_higher_ones():
    wrong = [f"{a} → {b}" for a, targets in GRAPH.items() for b in targets
             if _layer(b) > _layer(a) and not b.startswith(a + ".")]  # a package may import its own modules
    assert not wrong, "imports against the layers: " + ", ".join(sorted(wrong))


def _cycle(graph: dict[str, set[str]]) -> list[str]:
    state, stack = {}, []

    def visit(node):
        state[node] = "open"
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == "open":
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        state[node] = "done"
        stack.pop()
        return []

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return []


def test_no_import_cycles_inside_helpers():
    assert _cycle(GRAPH) == []


def test_the_cycle_check_finds_a_cycle():
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]


def test_subpackages_follow_the_stages_and_say_what_lives_there():
    assert {p.name for p in HELPERS.iterdir() if (p / "__init__.py").is_file()} == \
        {"data", "models", "training", "evaluation", "reporting"}
    for package in ("data", "training", "evaluation", "reporting"):
        doc = ast.get_docstring(ast.parse((HELPERS / package / "__init__.py").read_text()))
        assert doc and "notebook" in doc
        for module in (HELPERS / package).glob("*.py"):
            if module.stem not in ("__init__", "__main__"):
                assert f"``{module.stem}``" in doc, f"{package}/__init__.py does not mention {module.stem}"


def test_every_module_starts_with_a_docstring():
    missing = [name for name, path in MODULES.items() if not ast.get_docstring(ast.parse(path.read_text()))]
    assert not missing


@pytest.mark.parametrize("module", ["helpers.training", "helpers.pipeline", "helpers.runtime", "helpers.evaluation.predict",
                                    "helpers.evaluation.export", "helpers.evaluation.external", "helpers.data.shrink",
                                    "helpers.reporting.snapshot", "helpers.bench", "helpers.bench_predict",
                                    "helpers.gpu_window"])
def test_command_lines_answer_help(module):
    done = subprocess.run([sys.executable, "-m", module, "--help"], cwd=ROOT, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "usage:" in done.stdout
