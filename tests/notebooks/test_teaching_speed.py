"""Teaching cells take seconds on any profile: notebooks 02 and 03 executed at the `t4` profile's sizes on the CPU.

Every code cell but the set-up, the data and the training cell must run in at most ``$KIT_TEACHING_SECONDS``
(default 30 s: the budget on 2 CPU cores), read from papermill's record of each cell
(``metadata.papermill.duration``). The run uses the paper-size UNet and UNet++ and the `small` TransUNet at 256 px,
one epoch on 10 % of the offline sample, on the CPU even where a GPU is present.

It trains those models for an epoch, which takes several minutes on 2 CPU cores, so it is opt-in:

    KIT_TEACHING_SPEED=1 .venv/bin/python -m pytest -c tests/pytest.ini --rootdir . tests/notebooks/test_teaching_speed.py -s

The function that picks the cells to time is tested always.
"""
import json
import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BUDGET_S = float(os.environ.get("KIT_TEACHING_SECONDS", "30"))
NOT_TEACHING = ("runtime.start(", "study.follow(", "study.prepare(", "live.train(")  # set-up, data, training
T4_SIZES = {"PROFILE": "t4", "FRACTIONS": [0.1], "NUM_EPOCHS": 1}


def teaching_durations(executed: dict) -> dict[str, float]:
    """Seconds papermill recorded for each teaching cell of an executed notebook: cell id → duration.

    Teaching cells are the code cells after the parameters cell that neither set up, load data nor train.
    """
    durations = {}
    for cell in executed["cells"]:
        source = "".join(cell["source"])
        if cell["cell_type"] != "code" or "parameters" in cell["metadata"].get("tags", []) or \
                any(marker in source for marker in NOT_TEACHING) or "injected-parameters" in cell["metadata"].get("tags", []):
            continue
        durations[cell.get("id", "?")] = float(cell["metadata"].get("papermill", {}).get("duration") or 0.0)
    return durations


def test_teaching_durations_skip_setup_data_and_training():
    def code(cell_id, source, seconds, tags=()):
        return {"cell_type": "code", "id": cell_id, "source": [source],
                "metadata": {"tags": list(tags), "papermill": {"duration": seconds}}}

    executed = {"cells": [code("p", "PROFILE = ''", 0.0, ["parameters"]), code("s", "runtime.start(PROFILE)", 9.0),
                          code("f", "cfg, chosen, options = study.follow(PROFILE)", 1.0),
                          code("d", "data = study.prepare(cfg, chosen)", 9.0), code("a", "layer_shapes(unet, 64)", 1.5),
                          code("t", "trained = live.train(cfg, data)", 600.0), {"cell_type": "markdown", "source": ["#"]},
                          code("b", "figures.prediction_grid(unets, data)", 2.5)]}
    assert teaching_durations(executed) == {"a": 1.5, "b": 2.5}


@pytest.mark.parametrize("name", ["02_unet.ipynb", "03_unetpp_transunet.ipynb"])
def test_the_cells_left_out_are_the_ones_the_notebooks_have(name):
    notebook = json.loads((ROOT / "notebooks" / name).read_text(encoding="utf-8"))
    sources = ["".join(cell["source"]) for cell in notebook["cells"] if cell["cell_type"] == "code"]
    for marker in NOT_TEACHING:  # each names exactly one cell: set-up, study, data or training
        assert sum(marker in source for source in sources) == 1, f"{name}: {marker!r}"
    assert len(teaching_durations(notebook)) == len(sources) - len(NOT_TEACHING) - 1  # - parameters


@pytest.mark.slow
@pytest.mark.skipif(os.environ.get("KIT_TEACHING_SPEED") != "1",
                    reason="opt-in (several minutes on 2 CPU cores): KIT_TEACHING_SPEED=1")
@pytest.mark.parametrize("name", ["02_unet.ipynb", "03_unetpp_transunet.ipynb"])
def test_teaching_cells_take_seconds_at_t4_sizes_on_the_cpu(name, tmp_path, monkeypatch):
    import papermill

    monkeypatch.setenv("KIT_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("KIT_RESULTS_DIR", str(tmp_path / "results"))
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")  # the CPU, even on a machine with a GPU
    target = tmp_path / name
    papermill.execute_notebook(str(ROOT / "notebooks" / name), str(target), parameters=T4_SIZES,
                               cwd=str(ROOT / "notebooks"), kernel_name="python3", progress_bar=False)
    durations = teaching_durations(json.loads(target.read_text()))
    slowest = max(durations, key=durations.get)
    print(f"{name} at t4 sizes on the CPU ({os.cpu_count()} cores): slowest teaching cell {slowest}, "
          f"{durations[slowest]:.1f} s; all: {durations}")
    assert durations[slowest] <= BUDGET_S, {k: round(v, 1) for k, v in durations.items() if v > BUDGET_S}
