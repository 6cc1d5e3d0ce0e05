"""`make demo`'s profile teaches the right lesson: the models learn, and more data helps (a short run of it)."""
import pandas as pd
import pytest

from helpers.data import sources
from helpers.evaluation import scoring
from helpers.profiles import resolve_config
from helpers.training import grid


@pytest.mark.slow  # the demo profile trains four runs
def test_the_demo_profile_learns_and_more_data_helps(results, tmp_path, monkeypatch):
    monkeypatch.setenv("KIT_DATA_DIR", str(tmp_path / "data"))
    config = resolve_config("demo", models="unet,unetpp")  # 4 of its 6 runs, about a minute
    data = sources.ensure_prepared(config)  # its own data: 300 real pairs of the bundled archive
    trained = grid.run_grid(config, data, progress=False)
    scoring.evaluate_runs(progress=False)
    dice = {(r.model, r.fraction): pd.read_csv(f"{r.run_dir}/test_metrics.csv")["dice"].mean()
            for r in trained.itertuples()}
    for model in ("unet", "unetpp"):
        assert dice[model, 1.0] >= 0.75, dice  # make demo: 0.778 for both (45 test images)
        assert dice[model, 1.0] > dice[model, 0.1], dice  # make demo at 10 %: UNet 0.498, UNet++ 0.187
    assert dice["unet", 0.1] > 0.3, dice  # 21 images learn something; UNet++'s 21 steps barely start (0.0-0.2)
