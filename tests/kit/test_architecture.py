"""The shape of helpers/: subpackages by stage, lower layers never import higher ones, no import cycles (the command
lines: tests/kit/test_commands.py)."""
import ast
import importlib
import importlib.util
import json
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
HELPERS = ROOT / "helpers"
# lowest first; a module may import from its own layer or a lower one
LAYERS = {"helpers.cli": 0, "helpers.paths": 0, "helpers.profiles": 0, "helpers.recipes": 0, "helpers.runtime": 0,
          "helpers.data": 1, "helpers.models": 2, "helpers.training": 3,
          "helpers.evaluation": 4, "helpers.reporting": 5, "helpers.pipeline": 6, "helpers.tools": 7,
          "helpers": 0}  # the package's own __init__ imports nothing of the kit
MAX_TOP_LEVEL_MODULES = 6  # helpers/*.py besides __init__: what notebooks and users import; the rest in subpackages


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
    """The rank of the longest prefix of ``name`` in LAYERS (``helpers.data.prep`` → ``helpers.data``)."""
    matches = [prefix for prefix in LAYERS if name == prefix or name.startswith(prefix + ".")]
    return LAYERS[max(matches, key=len)]


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


def test_the_layer_of_a_module_is_its_longest_prefix():
    assert (_layer("helpers"), _layer("helpers.data.prep"), _layer("helpers.tools.bench")) == (0, 1, 7)


def test_no_course_module_imports_the_tools():
    wrong = [f"{a} → {b}" for a, targets in GRAPH.items() for b in targets
             if b.startswith("helpers.tools") and not a.startswith("helpers.tools")]
    assert not wrong, "course modules importing helpers.tools: " + ", ".join(sorted(wrong))


def test_no_notebook_imports_the_tools():
    imports = re.compile(r"^\s*(from helpers\.tools\b|import helpers\.tools\b|from helpers import .*\btools\b)", re.M)
    for notebook in sorted((ROOT / "notebooks").glob("*.ipynb")):
        cells = json.loads(notebook.read_text())["cells"]
        code = "\n".join("".join(cell["source"]) for cell in cells if cell["cell_type"] == "code")
        assert not imports.search(code), f"{notebook.name} imports helpers.tools: tools are for maintainers"


def test_helpers_keeps_few_top_level_modules():
    top = sorted(p.stem for p in HELPERS.glob("*.py") if p.stem != "__init__")
    assert len(top) <= MAX_TOP_LEVEL_MODULES, f"helpers/ has {len(top)} top-level modules ({', '.join(top)}): " \
        f"at most {MAX_TOP_LEVEL_MODULES}; move the new one into the subpackage of its stage, or helpers/tools/"


def test_the_package_docstring_maps_every_subpackage_and_top_level_module():
    doc = ast.get_docstring(ast.parse((HELPERS / "__init__.py").read_text()))
    names = [p.stem for p in HELPERS.glob("*.py") if p.stem != "__init__"] + \
        [f"{p.name}/" for p in HELPERS.iterdir() if (p / "__init__.py").is_file()]
    missing = [name for name in names if not any(line.split()[:1] == [name] for line in doc.splitlines())]
    assert not missing, f"helpers/__init__.py's docstring has no line for {missing}"


def _readme_layout() -> dict[str, set[str]]:
    """The modules docs/layout.md's tree lists for helpers/ ("") and each subpackage, parenthesised notes left out."""
    section = (ROOT / "docs" / "layout.md").read_text().split("## The tree\n", 1)[1]
    block = section[section.index("    helpers/"):section.index("\n    data/")]
    listed, current = {}, None
    for token in re.sub(r"\([^)]*\)", " ", block).split():
        if token.endswith("/"):
            current = "" if token == "helpers/" else token[:-1]
            listed[current] = set()
        else:
            listed[current].add(token)
    return listed


def test_the_readme_layout_lists_every_module_of_the_tree():
    tree = {"": {p.stem for p in HELPERS.glob("*.py") if p.stem != "__init__"}}
    for package in (p for p in HELPERS.iterdir() if (p / "__init__.py").is_file()):
        tree[package.name] = {p.stem for p in package.glob("*.py") if p.stem not in ("__init__", "__main__")}
    listed = _readme_layout()
    wrong = [f"helpers/{name + '/' if name else ''}: missing {sorted(tree.get(name, set()) - listed.get(name, set()))}, "
             f"not in the tree {sorted(listed.get(name, set()) - tree.get(name, set()))}"
             for name in sorted(set(tree) | set(listed)) if tree.get(name) != listed.get(name)]
    assert not wrong, "docs/layout.md's tree and helpers/ differ; update docs/layout.md:\n" + "\n".join(wrong)


def test_the_cycle_check_finds_a_cycle():
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]


def test_subpackages_follow_the_stages_and_say_what_lives_there():
    assert {p.name for p in HELPERS.iterdir() if (p / "__init__.py").is_file()} == \
        {"data", "models", "training", "evaluation", "reporting", "tools"}
    for package in ("data", "training", "evaluation", "reporting", "tools"):
        doc = ast.get_docstring(ast.parse((HELPERS / package / "__init__.py").read_text()))
        assert doc and "notebook" in doc
        for module in (HELPERS / package).glob("*.py"):
            if module.stem not in ("__init__", "__main__"):
                assert f"``{module.stem}``" in doc, f"{package}/__init__.py does not mention {module.stem}"


# :func:`helpers.x.y`, :class:`~helpers.x.Y`, ... and plain mentions such as ``python -m helpers.x`` in docstrings and
# comments: every dotted name that starts with ``helpers.``
REFERENCE = re.compile(r"(?<![\w./])~?(helpers(?:\.\w+)+)")


def _resolves(dotted: str) -> bool:
    """Whether ``helpers.a.b.c`` names a module, or an attribute (of an attribute...) of the longest module prefix."""
    parts = dotted.split(".")
    for cut in range(len(parts), 0, -1):
        module_name = ".".join(parts[:cut])
        try:
            found = importlib.import_module(module_name)
        except ModuleNotFoundError as err:
            if not f"{module_name}.".startswith(f"{err.name}."):  # a real module lacking a dependency: say so
                raise
            continue
        for part in parts[cut:]:
            if not hasattr(found, part):
                return False
            found = getattr(found, part)
        return True
    return False


def test_the_reference_resolver_tells_real_names_from_stale_ones():
    assert _resolves("helpers.training.runs.RunSpec") and _resolves("helpers.data") and _resolves("helpers.paths.REPO_URL")
    assert not _resolves("helpers.distributed.pick_device") and not _resolves("helpers.training.runs.no_such_name")


def test_the_reference_pattern_finds_roles_and_plain_mentions():
    text = ":func:`~helpers.a.b`, :mod:`helpers.c` and python -m helpers.d.e. Not myhelpers.f or x/helpers.g"
    assert [m[1] for m in REFERENCE.finditer(text)] == ["helpers.a.b", "helpers.c", "helpers.d.e"]


def test_every_docstring_reference_to_helpers_resolves():
    stale = [f"{path.relative_to(ROOT)}:{text[:match.start()].count(chr(10)) + 1}: {match[1]}"
             for path in MODULES.values() for text in [path.read_text()] for match in REFERENCE.finditer(text)
             if not _resolves(match[1])]
    assert not stale, "references to names that do not exist:\n" + "\n".join(stale)


def _module_exists(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except ModuleNotFoundError:  # its package does not exist either
        return False


def test_the_module_check_tells_real_modules_from_missing_ones():
    assert _module_exists("helpers.tools.bench") and not _module_exists("helpers.bench")
    assert not _module_exists("helpers.nothing.here")


def test_every_documented_command_exists():
    documents = [ROOT / "README.md", ROOT / "Makefile", *ROOT.glob("*/README.md"), *ROOT.glob("results/*/README.md"),
                 *ROOT.glob("tests/colab/*.md"), *ROOT.glob("docs/*.md")]
    missing = sorted({f"{path.relative_to(ROOT)}: python -m {match[1]}" for path in documents
                      for match in re.finditer(r"-m (helpers(?:\.\w+)+)", path.read_text())
                      if not _module_exists(match[1])})
    assert not missing, "commands of modules that do not exist:\n" + "\n".join(missing)


def _unexplained_inner_imports(source: str) -> list[int]:
    """Lines of imports inside a function with no comment on that line saying why they are there."""
    lines = source.splitlines()
    functions = (n for n in ast.walk(ast.parse(source)) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)))
    return sorted({sub.lineno for function in functions for sub in ast.walk(function)
                   if isinstance(sub, (ast.Import, ast.ImportFrom)) and "#" not in lines[sub.lineno - 1]})


def test_the_inner_import_check_wants_a_reason():
    source = "def f():\n    import torch  # heavy\n    import os\n"
    assert _unexplained_inner_imports(source) == [3]


def test_imports_inside_functions_say_why():
    found = [f"{path.relative_to(ROOT)}:{line}" for path in MODULES.values()
             for line in _unexplained_inner_imports(path.read_text())]
    assert not found, ("imports inside functions: move them to the top of the module, or, where one avoids a heavy "
                       "or optional import or a cycle, say so in a comment on its line:\n" + "\n".join(found))


def test_every_module_starts_with_a_docstring():
    missing = [name for name, path in MODULES.items() if not ast.get_docstring(ast.parse(path.read_text()))]
    assert not missing
