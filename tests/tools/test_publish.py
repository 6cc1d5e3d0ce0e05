"""Publishing executed notebooks: outputs kept, this machine's paths made relative, large PNGs as JPEGs."""
import base64
import io
import json

import numpy as np
import pytest
from PIL import Image

from helpers import paths
from helpers.tools import publish


def test_published_notebooks_keep_their_outputs_without_the_paths_of_this_machine(tmp_path, monkeypatch):
    home = tmp_path / "home"
    monkeypatch.setenv("KIT_HOME", str(home))
    monkeypatch.delenv("KIT_DATA_DIR")
    monkeypatch.delenv("KIT_RESULTS_DIR")
    executed = tmp_path / "executed"
    executed.mkdir()
    output = {"output_type": "stream", "name": "stdout",
              "text": [f"prepared data: {paths.data_dir()}/prepared/x\n", f"run folder: {paths.results_dir()}/runs/r\n"]}
    notebook = {"cells": [{"cell_type": "code", "source": [], "metadata": {}, "outputs": [output], "execution_count": 1}],
                "metadata": {}, "nbformat": 4, "nbformat_minor": 5}
    (executed / "02_unet.ipynb").write_text(json.dumps(notebook))
    written = publish.publish_notebooks(executed, tmp_path / "published")
    text = written[0].read_text()
    assert str(tmp_path) not in text and "prepared data: data/prepared/x" in text and "run folder: results/runs/r" in text
    assert json.loads(text)["cells"][0]["outputs"][0]["name"] == "stdout"
    with pytest.raises(FileNotFoundError, match="holds no executed notebook"):
        publish.publish_notebooks(tmp_path / "nothing", tmp_path / "published")


def test_large_png_outputs_are_published_as_jpegs_and_small_ones_stay():
    def png(size, seed):
        pixels = np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8)
        buffer = io.BytesIO()
        Image.fromarray(pixels).resize((4 * size, 4 * size), Image.BICUBIC).save(buffer, "PNG")  # photo-like
        return base64.b64encode(buffer.getvalue()).decode()

    big, small = png(200, 0), png(8, 1)
    outputs = [{"output_type": "display_data", "data": {"image/png": big, "text/plain": ["<Figure>"]},
                "metadata": {"image/png": {"width": 800}}},
               {"output_type": "display_data", "data": {"image/png": small}, "metadata": {}}]
    notebook = {"cells": [{"cell_type": "code", "outputs": outputs}]}
    assert publish.shrink_images(notebook) == 1
    first, second = notebook["cells"][0]["outputs"]
    assert set(first["data"]) == {"image/jpeg", "text/plain"} and first["metadata"] == {"image/jpeg": {"width": 800}}
    assert len(first["data"]["image/jpeg"]) < 0.75 * len(big) and second["data"] == {"image/png": small}
    with Image.open(io.BytesIO(base64.b64decode(first["data"]["image/jpeg"]))) as image:
        assert image.format == "JPEG" and image.size == (800, 800)


def test_the_command_publishes_a_folder_and_says_where(tmp_path, capsys):
    executed = tmp_path / "executed"
    executed.mkdir()
    (executed / "01_data_prep.ipynb").write_text(json.dumps({"cells": [], "metadata": {}, "nbformat": 4,
                                                             "nbformat_minor": 5}))
    assert publish.main([str(executed), "--dest", str(tmp_path / "out")]) == 0
    assert (tmp_path / "out" / "01_data_prep.ipynb").is_file() and "1 notebook(s)" in capsys.readouterr().out
    assert publish.main([str(tmp_path / "nothing")]) == 1
    assert "holds no executed notebook" in capsys.readouterr().err


def test_only_whole_path_components_are_made_relative():
    homes = [("/x/home/results", "results"), ("/x/home", ".")]
    text = "/x/home/results/runs/a and /x/home2/b and /x/home"
    assert publish.relative_paths(text, homes) == "results/runs/a and /x/home2/b and ."
