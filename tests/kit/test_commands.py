"""Every command line of the kit behaves alike: ``usage: python -m helpers…``, one ``✗`` line for an error (no
traceback) with exit code 1 or 2, messages that name a command rather than a Python function, and one rule for the
default profile, whose choices come from the registry.

Each command runs as ``python -m`` runs it (:func:`runpy.run_module` as ``__main__``), in this process: the same
entry point, without starting Python and importing torch a dozen times.
"""
import ast
import re
import runpy
import sys
import warnings
from pathlib import Path

import pytest
from PIL import Image

from helpers.profiles import PROFILES

ROOT = Path(__file__).resolve().parents[2]

# module → (a bad call, with {tmp} for a scratch folder; what its message must name; its exit code)
COMMANDS = {
    "helpers.training": (["--shard", "3/2"], "3/2", 2),
    "helpers.pipeline": (["-p", "LR", "-1"], "LR = -1", 2),
    "helpers.evaluation.predict": (["{tmp}/no-run", "{tmp}/photo.png", "{tmp}/out"], "ls ", 1),
    "helpers.evaluation.export": (["{tmp}/no-run", "{tmp}/out"], "ls ", 1),
    "helpers.evaluation.external": (["--results", "{tmp}/empty"], "{tmp}/empty", 1),
    "helpers.reporting.snapshot": (["--results", "{tmp}"], "python -m helpers.pipeline --only 04", 1),
    "helpers.tools.bench": (["--sections", "nope"], "nope", 2),
    "helpers.tools.bench_predict": (["{tmp}/no-run"], "no-run", 1),
    "helpers.tools.gpu_window": (["--out", "{tmp}/window", "--only", "nope"], "nope", 2),
    "helpers.tools.shrink": (["{tmp}/no-data", "{tmp}/copy", "--size", "64"], "no-data", 1),
    "helpers.tools.fork": (["ftp://example.org/kit"], "ftp://example.org/kit", 2),
    "helpers.tools.publish": (["{tmp}/no-notebooks"], "no-notebooks", 1),
    "helpers.tools.recipe_table": (["{tmp}/no-results"], "no-results", 1),
    "helpers.tools.ship": (["{tmp}/no-run", "{tmp}/no-study-run"], "no-run", 1),
}
PROFILE_CHOICES = "{" + ",".join(["", *PROFILES]) + "}"  # how argparse shows choices ["", *PROFILES]


def run_command(module: str, argv: list[str], monkeypatch, capsys) -> tuple[int, str, str]:
    """Run ``python -m module argv...`` here: its exit code, stdout and stderr."""
    monkeypatch.setattr(sys, "argv", [module, *argv])
    code = 0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # "found in sys.modules": the module is imported already
        try:
            runpy.run_module(module, run_name="__main__", alter_sys=True)
        except SystemExit as done:
            code = done.code if isinstance(done.code, int) else 1
    out, err = capsys.readouterr()
    return code, out, err


def command_modules() -> set[str]:
    """Every module with a ``main`` (the command ``python -m`` runs: ``helpers.training`` for its grid)."""
    found = set()
    for path in (ROOT / "helpers").rglob("*.py"):
        tree = ast.parse(path.read_text())
        if any(isinstance(node, ast.FunctionDef) and node.name == "main" for node in tree.body):
            found.add(".".join(path.relative_to(ROOT).with_suffix("").parts))
    return {"helpers.training" if name == "helpers.training.__main__" else name for name in found}


def test_every_command_is_in_the_table():
    assert command_modules() == set(COMMANDS), "a command with a main(): add it to COMMANDS with a bad call"


@pytest.mark.parametrize("module", sorted(COMMANDS))
def test_help_names_the_command_to_type(module, monkeypatch, capsys):
    code, out, _ = run_command(module, ["--help"], monkeypatch, capsys)
    assert code == 0 and out.startswith(f"usage: python -m {module}")
    assert "--debug" in out  # every command lets the traceback through when asked (helpers.cli)
    if "--profile" in out:  # one rule for the default, the choices from the registry
        assert PROFILE_CHOICES in out and "$KIT_PROFILE" in out


@pytest.mark.parametrize("module", sorted(COMMANDS))
def test_a_bad_call_says_what_is_wrong_in_one_line(module, tmp_path, monkeypatch, capsys):
    argv, named, expected = COMMANDS[module]
    Image.new("RGB", (8, 8)).save(tmp_path / "photo.png")
    code, _, err = run_command(module, [a.format(tmp=tmp_path) for a in argv], monkeypatch, capsys)
    lines = err.strip().splitlines()
    assert code == expected, err
    assert len(lines) == 1 and lines[0].startswith("✗ ") and "Traceback" not in err, err
    assert named.format(tmp=tmp_path) in lines[0], lines[0]
    assert "()" not in lines[0], f"name the command to run, not a Python function: {lines[0]}"


def test_debug_lets_the_traceback_through(tmp_path, monkeypatch, capsys):
    with pytest.raises(FileNotFoundError, match="no-notebooks"):
        run_command("helpers.tools.publish", [str(tmp_path / "no-notebooks"), "--debug"], monkeypatch, capsys)


def test_a_profile_left_out_follows_the_one_rule(monkeypatch):
    from helpers.tools import bench

    monkeypatch.setenv("KIT_PROFILE", "cpu")
    args = bench.parser().parse_args([])
    assert args.profile == "" and bench.resolve_config(args.profile or None).name == "cpu"


def test_the_readme_states_the_defaults():
    """docs/data.md's size of the shrunk copy is at shrink's default quality (the t4 study's copy was made so)."""
    from helpers.tools import shrink

    said = re.search(r"36 MB at 256 px and the default JPEG quality (\d+)", (ROOT / "docs" / "data.md").read_text())
    assert said and int(said.group(1)) == shrink.QUALITY


# the commands that run a model, and those that write a folder of their own (named --out)
RUNS_A_MODEL = {"helpers.training", "helpers.pipeline", "helpers.evaluation.predict", "helpers.evaluation.external",
                "helpers.tools.bench", "helpers.tools.bench_predict", "helpers.tools.recipe_table", "helpers.tools.ship"}
WRITES_A_FOLDER = {"helpers.training", "helpers.pipeline", "helpers.evaluation.predict", "helpers.evaluation.export",
                   "helpers.reporting.snapshot", "helpers.tools.gpu_window", "helpers.tools.shrink",
                   "helpers.tools.publish", "helpers.tools.recipe_table"}


@pytest.mark.parametrize("module", sorted(COMMANDS))
def test_every_command_says_its_version(module, monkeypatch, capsys):
    import helpers

    code, out, _ = run_command(module, ["--version"], monkeypatch, capsys)
    assert code == 0 and out.strip() == f"skin-lesion-kit {helpers.__version__}"


@pytest.mark.parametrize("module", sorted(COMMANDS))
def test_commands_name_their_options_alike(module, monkeypatch, capsys):
    _, out, _ = run_command(module, ["--help"], monkeypatch, capsys)
    assert ("--device" in out) == (module in RUNS_A_MODEL), f"{module}: --device on every command that runs a model"
    assert ("--out" in out) == (module in WRITES_A_FOLDER), f"{module}: an output folder is named --out"
    assert "--dest" not in out, f"{module}: --out, not --dest"


def test_an_unknown_device_is_refused_where_it_enters(monkeypatch, capsys):
    code, _, err = run_command("helpers.evaluation.external", ["--device", "tpu"], monkeypatch, capsys)
    assert code == 2 and "--device tpu" in err and "cpu" in err


def test_the_older_output_spellings_still_work(tmp_path):
    from helpers import cli

    assert cli.out_folder(None, "old") == "old" and cli.out_folder("new", None) == "new"
    assert cli.out_folder("same", "same") == "same"
    with pytest.raises(cli.BadValue, match="two output folders"):
        cli.out_folder("a", "b")
    assert cli.comma_list(["unet,unetpp", "transunet"]) == ["unet", "unetpp", "transunet"]
    assert cli.comma_list("onnx") == ["onnx"] and cli.comma_list(None) is None


def test_the_training_command_chooses_model_configurations():
    from helpers import cli
    from helpers.training.__main__ import model_configs, parser, settings_from_args

    args = parser().parse_args(["--models", "unet,unetpp", "--model-config", "unetpp=r34,unet=small"])
    assert settings_from_args(args)["model_configs"] == {"unetpp": "r34", "unet": "small"}
    for bad in ("unetpp", "unetpp=r99", "vit=r34"):
        with pytest.raises(cli.BadValue, match="MODEL=CONFIG"):
            model_configs(bad)
