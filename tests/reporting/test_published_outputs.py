"""The deterministic outputs of the published notebooks (results/demo_notebooks/, the `demo` profile) are what the
current notebooks compute: shapes, parameter counts, FLOPs, the loss by hand, the fraction sizes.

The cells listed in CHECKED are run again here from the source notebooks, in one namespace after the notebook's
own parameters and configuration cells (as Jupyter would run them), and their printed text and displayed value
must equal the published copy's, character for character. Everything else keeps nbval's lax mode: timings and
trained numbers differ from run to run. When this fails after a notebook change, publish the notebooks again
(`make demo`, then `python -m helpers.tools.publish results/notebooks/demo --dest results/demo_notebooks`).
"""
import ast
import contextlib
import io
import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PUBLISHED = ROOT / "results" / "demo_notebooks"
SETUP = ("c04",)  # after the parameters cell: the imports and the run config (the setup cell needs no re-run here)
CHECKED = {"02_unet.ipynb": ("c11", "c13", "c15"), "03_unetpp_transunet.ipynb": ("c08", "c11")}


def _cells(path: Path) -> dict[str, dict]:
    return {cell["id"]: cell for cell in json.loads(path.read_text())["cells"]}


def _source(cell: dict) -> str:
    text = "".join(cell["source"])
    return "\n".join(line for line in text.splitlines() if not line.lstrip().startswith(("%", "!")))


def _run(code: str, namespace: dict) -> tuple[str, str | None]:
    """Run a cell as IPython would: its printed text, and the repr of its last expression (None if there is none)."""
    tree = ast.parse(code)
    last = tree.body.pop() if tree.body and isinstance(tree.body[-1], ast.Expr) else None
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(tree, "<cell>", "exec"), namespace)
        value = eval(compile(ast.Expression(last.value), "<cell>", "eval"), namespace) if last else None
    return out.getvalue(), None if value is None else repr(value)


def _published(cell: dict) -> tuple[str, str | None]:
    text = "".join("".join(o.get("text", "")) for o in cell["outputs"] if o["output_type"] == "stream")
    shown = [o["data"]["text/plain"] for o in cell["outputs"] if o["output_type"] == "execute_result"]
    return text, "".join(shown[0]) if shown else None


@pytest.mark.parametrize("notebook", sorted(CHECKED))
def test_deterministic_cells_reproduce_the_published_outputs(notebook, tmp_path, monkeypatch):
    monkeypatch.setenv("KIT_DATA_DIR", str(tmp_path / "data"))
    source, published = _cells(ROOT / "notebooks" / notebook), _cells(PUBLISHED / notebook)
    namespace: dict = {}
    parameters = next(c for c in source.values() if "parameters" in c["metadata"].get("tags", []))
    _run(_source(parameters), namespace)
    namespace["PROFILE"] = "demo"  # what make demo ran
    with contextlib.redirect_stdout(io.StringIO()):
        for cell_id in SETUP:
            _run(_source(source[cell_id]), namespace)
    for cell_id in CHECKED[notebook]:
        assert cell_id in published, f"{notebook}: cell {cell_id} is not in the published copy: publish again"
        assert _run(_source(source[cell_id]), namespace) == _published(published[cell_id]), \
            f"{notebook} cell {cell_id}: the published output is not what the notebook computes now"


def test_the_published_fraction_table_follows_the_nesting_rule():
    """01's table: each fraction holds round(f × n) of the n training images (Python's rounding, half to even)."""
    cell = _cells(PUBLISHED / "01_data_prep.ipynb")["c16"]
    _, table = _published(cell)
    rows = [line.split() for line in table.splitlines()[1:]]
    sizes = {int(row[1]) / 100: int(row[3]) for row in rows}
    n_train = sizes[1.0]
    assert n_train == 210 and sizes == {f: round(f * n_train) for f in (0.1, 0.25, 0.5, 1.0)}  # 70 % of 300
