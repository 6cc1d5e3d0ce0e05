"""The study chosen once (notebook 01 records it; 02-04, the runner and the CLI follow), and the settings declared
once (RunConfig's fields carry their metadata; the CLI, the run spec and the parameter table derive from them)."""
import ast
import dataclasses
import json
import re

import pytest

from helpers import pipeline, profiles
from helpers.data import study
from helpers.training import __main__ as training_cli
from helpers.training import grid, runs


@pytest.fixture
def home(tmp_path, monkeypatch):
    """A fresh data home: no study recorded."""
    monkeypatch.setenv("KIT_DATA_DIR", str(tmp_path / "data"))
    return tmp_path


def test_notebook_01_records_the_study_and_02_follows_it(home, capsys):
    chosen = study.choose("smoke", {"split_seed": 7, "protocol": "both"}, data_source="folder", data_dir="/x/isic")
    record = json.loads(study.record_path().read_text())
    assert record == {"profile": "smoke", "data_source": "folder", "data_dir": "/x/isic", "protocol": "both",
                      "mask_suffix": "auto", "download_mirror": "", "on_bad_file": "raise", "image_size": 64,
                      "split_seed": 7}
    assert chosen.config.split_seed == 7 and "recorded in" in capsys.readouterr().out
    cfg, followed, options = study.follow("", {"batch_size": 2, "restart": True}, models="unet", lr=None)
    assert followed == chosen.study and (cfg.name, cfg.split_seed, cfg.image_size) == ("smoke", 7, 64)
    assert (cfg.models, cfg.batch_size) == (("unet",), 2) and options == {"restart": True, "keep_last": False,
                                                                           "local_fallback": False}
    assert study.follow("smoke", {"data_source": "folder", "data_dir": "/x/isic"}).study == chosen.study  # same values


@pytest.mark.parametrize(("profile", "settings", "message"), [
    ("cpu", {}, "PROFILE = 'cpu', but the study has 'smoke'"),
    ("", {"data_source": "synthetic"}, "DATA_SOURCE = 'synthetic', but the study has 'folder'"),
    ("", {"image_size": 128}, "IMAGE_SIZE = 128, but the study has 64"),
    ("", {"mask_suffix": ""}, "MASK_SUFFIX = '', but the study has 'auto'"),
])
def test_a_value_that_differs_from_the_study_is_refused_naming_both(home, profile, settings, message):
    study.choose("smoke", data_source="folder", data_dir="/x/isic")
    with pytest.raises(study.StudyMismatch, match=message) as caught:
        study.follow(profile, settings)
    assert "To start another study, run notebook 01" in str(caught.value) and "KIT_HOME" in str(caught.value)


def test_a_notebook_opened_before_01_says_what_it_uses_and_records_it(home, capsys):
    assert study.read() is None
    cfg, chosen, _ = study.follow("demo", {}, models="unet")
    out = capsys.readouterr().out
    assert "No study recorded yet" in out and "profile demo · data bundled" in out
    assert study.read() == chosen and cfg.name == "demo"


def test_unknown_names_training_settings_in_01_and_a_broken_record_are_clear_errors(home):
    with pytest.raises(ValueError, match=r"SETTINGS has unknown name\(s\) \['btach_size'\]; known: "):
        study.follow("", {"btach_size": 2})
    with pytest.raises(ValueError, match=r"\['lr'\] are not study settings: .* notebook 02 or 03"):
        study.choose("", {"lr": 1e-3})
    with pytest.raises(ValueError, match="LR = 0.1 and SETTINGS\\['lr'\\] = 0.2 disagree"):
        study.follow("", {"lr": 0.2}, lr=0.1)
    with pytest.raises(ValueError, match="PROTOCOL = 'offical' is not valid"):
        study.choose("", {"protocol": "offical"})
    study.record_path().parent.mkdir(parents=True, exist_ok=True)
    study.record_path().write_text("{not json")
    with pytest.raises(ValueError, match=r"study\.json is not a readable study record .* run notebook 01 again"):
        study.follow("")


def test_every_setting_is_declared_once_with_its_metadata():
    for name, declared in profiles.SETTINGS.items():
        meta = declared.metadata
        assert meta["help"] and isinstance(meta["result"], bool), name
    # the run spec's training fields and the run id's fields derive from those declarations
    spec_fields = {f.name: f for f in dataclasses.fields(runs.RunSpec)}
    assert set(profiles.PER_RUN) <= set(spec_fields)
    assert {n for n in profiles.PER_RUN if spec_fields[n].compare} == \
        {n for n in profiles.PER_RUN if profiles.SETTINGS[n].metadata["result"]}
    assert "recipe" not in runs.SPEC_FIELDS and "lr" in runs.SPEC_FIELDS
    assert all(spec_fields[n].default == profiles.SETTINGS[n].default for n in profiles.PER_RUN)


def test_a_new_setting_is_one_field(monkeypatch):
    """Declared once, a setting appears in the CLI with its help, choices and defaults, and in the SETTINGS table."""
    extra = dataclasses.field(default="a", metadata={**profiles.SETTINGS["schedule"].metadata,
                                                      "help": "a made-up setting", "choices": ("a", "b")})
    extra.name, extra.type = "made_up", "str"
    monkeypatch.setitem(profiles.SETTINGS, "made_up", extra)
    monkeypatch.setitem(profiles.CHOICES, "made_up", ("a", "b"))
    monkeypatch.setattr(profiles, "PROFILES", {name: _with_attr(cfg, "made_up", "a")
                                               for name, cfg in profiles.PROFILES.items()})
    text = training_cli.parser().format_help()
    assert "--made-up {a,b}" in text and "a made-up setting; one of a, b (default: a)" in " ".join(text.split())


def _with_attr(config, name, value):
    class Shown:
        def __getattr__(self, attr):
            return value if attr == name else getattr(config, attr)
    return Shown()


def test_cli_help_shows_choices_and_each_profiles_default():
    text = " ".join(training_cli.parser().format_help().split())
    assert "--amp {auto,bf16,fp16,off}" in text and "--profile {,smoke,demo,cpu,t4,class}" in text
    assert "peak AdamW learning rate (default: smoke 0.0001, demo 0.003, cpu 0.001, t4 0.0001, class 0.001)" in text
    assert "usage: python -m helpers.training" in text


def test_cli_refuses_bad_values_in_one_line_and_follows_the_study(home, capsys):
    assert training_cli.main(["--lr", "inf"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("✗ LR = 'inf' is not valid: expected a finite number") and "Traceback" not in err
    assert study.read() is None  # a refused call records nothing
    assert training_cli.main(["--profile", "cpu", "--image-size", "70"]) == 2
    assert "IMAGE_SIZE = '70' is not valid: expected a multiple of 16" in capsys.readouterr().err
    r34 = profiles.resolve_config("smoke", image_size=48, models="unet", model_configs={"unet": "r34"})
    with pytest.raises(ValueError, match="IMAGE_SIZE = 48 does not fit unet 'r34': .* multiples of 32 .* e.g. 64"):
        grid.check_sizes(r34)
    study.choose("smoke")
    assert training_cli.main(["--data-source", "folder", "--data-dir", "/x"]) == 2
    assert "DATA_SOURCE = 'folder', but the study has 'synthetic'" in capsys.readouterr().err


def test_the_parameter_table_in_notebooks_readme_is_derived_from_the_declarations():
    listed = pipeline.settings_table()
    readme = (pipeline.paths.repo_root() / "notebooks" / "README.md").read_text()
    assert listed in readme, "regenerate it: python -m helpers.pipeline --list"


def test_settings_may_come_as_json_text_from_plain_papermill(home):
    assert study.follow("smoke", '{"batch_size": 2}').config.batch_size == 2
    with pytest.raises(ValueError, match="SETTINGS = '{batch' is not a JSON dict"):
        study.follow("smoke", "{batch")


def test_a_diverged_run_makes_the_training_cli_exit_non_zero(home, monkeypatch, capsys):
    import pandas as pd

    monkeypatch.setattr(study, "prepare", lambda config, chosen: "prepared")
    table = pd.DataFrame([{"run_id": "unet-tiny_f100_x", "status": "diverged"}, {"run_id": "b", "status": "trained"}])
    monkeypatch.setattr(grid, "run_grid", lambda config, data, **kwargs: table)
    assert training_cli.main(["--profile", "smoke", "--lr", "1e6"]) == 1
    assert "1 run(s) diverged (loss not finite): unet-tiny_f100_x; lower --lr" in capsys.readouterr().err
    monkeypatch.setattr(grid, "run_grid", lambda config, data, **kwargs: table.iloc[1:])
    assert training_cli.main(["--profile", "smoke"]) == 0


def test_a_bad_shard_is_refused_before_the_study_is_recorded(home, capsys):
    assert training_cli.main(["--profile", "smoke", "--shard", "3/2"]) == 2
    assert "--shard '3/2' is not I/N" in capsys.readouterr().err and study.read() is None


def test_study_fields_run_config_fields_and_grid_options_are_declared_alike():
    kinds = (dataclasses.fields(study.Study), dataclasses.fields(study.GridOptions),
             profiles.SETTINGS.values())
    declared = [f for fields in kinds for f in fields if f.metadata]
    keys = {frozenset(f.metadata) for f in declared}
    assert len(keys) == 1, "declare every setting with helpers.profiles.setting()"
    options = {f.name: f.metadata["help"] for f in dataclasses.fields(study.GridOptions)}
    assert options == study.GRID_OPTIONS


def _form_choices(path):
    """A notebook's Colab form: (NAME, the values its ``#@param [...]`` offers) for each listed field."""
    cells = json.loads(path.read_text(encoding="utf-8"))["cells"]
    source = "".join(next(c for c in cells if c["cell_type"] == "code")["source"])
    for name, values in re.findall(r"^(\w+) = .*#@param (\[[^\]]*\])", source, re.M):
        yield name, ast.literal_eval(values)


@pytest.mark.parametrize("name", ["01_data_prep.ipynb", "02_unet.ipynb", "03_unetpp_transunet.ipynb"])
def test_the_notebooks_forms_offer_only_declared_values(name):
    fields = {**{f.name: f for f in dataclasses.fields(study.Study)}, **profiles.SETTINGS}
    path = pipeline.paths.repo_root() / "notebooks" / name
    for parameter, values in _form_choices(path):
        if parameter == "PROFILE":
            allowed = ("", *profiles.PROFILES)
        else:
            assert parameter.lower() in fields, f"{name}: {parameter} is no declared setting"
            allowed = fields[parameter.lower()].metadata["choices"]
        offered = {part for value in values for part in str(value).split(",")}  # "unetpp,transunet"
        assert offered <= {"", *allowed}, f"{name}: {parameter} offers {offered - set(allowed)}"


def test_notebook_04_takes_its_options_in_settings_and_names_a_misspelt_one():
    opts = study.results_options({"n_boot": 200, "external_source": "folder", "external_dir": "data/PH2"})
    assert (opts.n_boot, opts.bootstrap_seed, opts.external_source, opts.export_submission) == \
        (200, 42, "folder", True)
    assert study.results_options('{"reevaluate": true}').reevaluate is True  # plain papermill's text
    with pytest.raises(ValueError, match=r"unknown name\(s\) \['n_boots'\].*Did you mean: n_boots → n_boot"):
        study.results_options({"n_boots": 10})
    with pytest.raises(ValueError, match=r"SETTINGS\['n_boot'\] = '10' is not valid: expected a whole number"):
        study.results_options({"n_boot": "10"})
    with pytest.raises(ValueError, match="above 0"):
        study.results_options({"n_boot": 0})
