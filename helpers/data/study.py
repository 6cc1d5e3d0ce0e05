"""The study, chosen once: notebook 01 records it in the kit's home; notebooks 02-04, the runner and
the CLI follow.

A study is the data (source, folder, protocol, mask suffix, mirror, what to do with a broken file),
the profile, and the two settings that fix the prepared data (image size and split seed). Notebook
01 calls :func:`choose`, which writes ``<data home>/prepared/study.json`` (on Drive on Colab).
Notebooks 02, 03 and 04 call :func:`follow`: their data settings default to "as 01 chose", and a
value given explicitly that differs from the record is refused (:class:`StudyMismatch`), naming both
values and how to start another study.

    choice = study.choose(PROFILE, SETTINGS, data_source=DATA_SOURCE,
                          data_dir=DATA_DIR)  # notebook 01
    cfg, chosen, options = study.follow(PROFILE, SETTINGS, models="unet", lr=LR)  # notebooks 02, 03

``SETTINGS`` is a dict of any other setting, by name: the study's (:class:`Study`), the training
settings (:data:`helpers.profiles.SETTINGS`) and the grid's options (:data:`GRID_OPTIONS`). Every
name is declared once, the same way (:func:`helpers.profiles.setting`: :class:`Study`,
:class:`GridOptions` here, and :class:`~helpers.profiles.RunConfig`); the runner, the CLI and the
parameter table derive from them.
"""
from __future__ import annotations

import dataclasses
import difflib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

from helpers import paths, profiles
from helpers.data.sources import PROTOCOLS, SOURCES, chosen_source, notebook_data
from helpers.profiles import setting

RECORD_NAME = "study.json"


@dataclass(frozen=True)
class Study:
    """What notebook 01 chose: the data, the profile, and the settings that fix the prepared data.

    ``image_size`` and ``split_seed`` are RunConfig settings (declared there); the record keeps
    their values.
    """

    profile: str = setting("the profile (smoke, demo, cpu, class, t4); empty: $KIT_PROFILE, else "
                           "class on Colab or with a GPU, cpu otherwise", "", result=False)
    data_source: str = setting("where the data comes from: bundled (the real 128-px ISIC archive "
                               "in the kit), synthetic (drawn blobs, for tests), folder, zip or "
                               "isic2018 (the official download); empty: the profile's (bundled; "
                               "isic2018 for t4; synthetic for smoke)", "", choices=("", *SOURCES))
    data_dir: str = setting("the folder or zip for folder/zip; where the zips are kept for "
                            "isic2018", "")
    protocol: str = setting("seed: a seeded 70/15/15 split of the training set; official: the "
                            "official val/test sets; both; external: every image a test image",
                            "seed", choices=(*PROTOCOLS, "both"))
    mask_suffix: str = setting("how mask names end in plain image/mask folders (_segmentation, "
                               "_lesion, _mask, '' for none); auto: detected", "auto")
    download_mirror: str = setting("isic2018 only: a base URL that replaces the official bucket (a "
                                   "mirror)", "", result=False)
    on_bad_file: str = setting("raise: stop at any broken file; skip: leave broken pairs out, "
                               "listed", "raise", choices=("raise", "skip"))
    image_size: int | None = None
    split_seed: int | None = None

    def summary(self) -> str:
        """One line for people."""
        where = f" {self.data_dir!r}" if self.data_dir else ""
        return (f"profile {self.profile} · data {self.data_source}{where} · protocol "
                f"{self.protocol} · {self.image_size} px · split seed {self.split_seed}")


STUDY_KEYS = tuple(f.name for f in dataclasses.fields(Study))
DATA_KEYS = tuple(name for name in STUDY_KEYS
                  if name not in ("profile", "image_size", "split_seed"))


@dataclass(frozen=True)
class GridOptions:
    """The grid's options: how to run, never what is run (the CLI flags and SETTINGS keys derive
    from them)."""

    restart: bool = setting("start the runs over (deleting their checkpoints) instead of resuming "
                            "or skipping them", False, result=False)
    keep_last: bool = setting("keep last.pt of finished runs too (default: best.pt only, a third "
                              "of the size)", False, result=False)
    local_fallback: bool = setting("if the checkpoint folder (Drive) stops taking writes, go on "
                                   "with local checkpoints", False, result=False)


GRID_OPTIONS = {f.name: f.metadata["help"] for f in dataclasses.fields(GridOptions)}  # name → help


@dataclass(frozen=True)
class ResultsOptions:
    """Notebook 04's options: how the runs are scored and reported (its ``SETTINGS`` takes these
    names)."""

    reevaluate: bool = setting("score runs again that already have test scores (e.g. after "
                               "changing TTA)", False, result=False)
    n_boot: int = setting("bootstrap resamples for the confidence intervals", 2000,
                          result=False, above=0)
    bootstrap_seed: int = setting("seed of the bootstrap resampling (not a training seed)", 42,
                                  result=False, minimum=0)
    export_submission: bool = setting("write the best run's test predictions in the ISIC challenge "
                                      "format", True, result=False)
    external_source: str | None = setting("another dataset to test the runs on, whole: folder, zip "
                                          "or synthetic; \"\": none; None: synthetic after "
                                          "training on the synthetic sample, else none",
                                          None, result=False)
    external_dir: str = setting("its folder or zip: ISIC, PH2 or images/masks folders (e.g. "
                                "data/PH2Dataset)", "", result=False)
    external_mask_suffix: str = setting("its mask names' ending in plain image/mask folders "
                                        "(_segmentation, _lesion, _mask, \"\"); auto: detected",
                                        "auto", result=False)


# name → help
RESULTS_OPTIONS = {f.name: f.metadata["help"] for f in dataclasses.fields(ResultsOptions)}
# synthetic_count and data_subset are left out: they change which images are drawn, so they belong
# to the profile
PROFILE_ONLY = ("image_size", "split_seed", "synthetic_count", "data_subset")
TRAINING_KEYS = tuple(name for name in profiles.SETTINGS if name not in PROFILE_ONLY)
ALL_KEYS = (*STUDY_KEYS, *TRAINING_KEYS, *GRID_OPTIONS)


class StudyMismatch(ValueError):
    """A notebook or command was given a study setting that differs from the study notebook 01
    recorded."""


class Choice(NamedTuple):
    """What a notebook runs with: the resolved run config, the study, and the grid's options."""

    config: profiles.RunConfig
    study: Study
    options: dict


def record_path() -> Path:
    """Where the study record lives: beside the prepared data, in the kit's home (on Drive on
    Colab)."""
    return paths.prepared_root() / RECORD_NAME


def read() -> Study | None:
    """The recorded study, or None when notebook 01 has not run in this home.

    Raises:
        ValueError: the record is not a readable study; the message names the file and what to do.
    """
    path = record_path()
    if not path.exists():
        return None
    try:
        values = json.loads(path.read_text(encoding="utf-8"))
        return Study(**{k: values[k] for k in STUDY_KEYS})
    except (json.JSONDecodeError, KeyError, TypeError) as err:
        raise ValueError(f"{path} is not a readable study record ({type(err).__name__}: {err}); "
                         f"run notebook 01 again to record the study "
                         f"(or delete the file).") from None


def write(chosen: Study) -> Path:
    """Record ``chosen`` as the study (atomically: a killed process never leaves half a record)."""
    path = record_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(dataclasses.asdict(chosen), indent=1) + "\n"
    return paths.write_atomic(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def _given(settings: dict | None, given: dict) -> dict:
    """The settings given explicitly: ``SETTINGS`` and the notebook's own parameters (None and ""
    mean not set)."""
    if isinstance(settings, str):  # plain papermill passes -p SETTINGS '{"batch_size": 8}' as text
        try:
            settings = json.loads(settings) if settings.strip() else {}
        except json.JSONDecodeError as err:
            raise ValueError(f"SETTINGS = {settings!r} is not a JSON dict ({err.msg}); write it "
                             f"like '{{\"batch_size\": 8}}'.") from None
    if not isinstance(settings, dict | None):
        raise ValueError(f"SETTINGS = {settings!r} is not a dict; write it like "
                         f"{{\"batch_size\": 8}}.")
    merged = dict(settings or {})
    unknown = sorted(set(merged) - set(ALL_KEYS))
    if unknown:
        raise ValueError(f"SETTINGS has unknown name(s) {unknown}; known: {sorted(ALL_KEYS)} "
                         f"(python -m helpers.pipeline --list describes each).{_nearest(unknown)}")
    if wrong := sorted(set(given) - set(ALL_KEYS)):
        raise TypeError(f"unknown keyword argument(s) {', '.join(f'{n}=' for n in wrong)}: the "
                        f"settings are named as in SETTINGS (python -m helpers.pipeline --list "
                        f"describes each).{_nearest(wrong)}")
    for name, value in given.items():
        if value is not None and name in merged and merged[name] != value:
            raise ValueError(f"{name.upper()} = {value!r} and SETTINGS[{name!r}] = "
                             f"{merged[name]!r} disagree; set it in one place.")
        if value is not None:
            merged[name] = value
    return {k: v for k, v in merged.items()
            if v is not None and not (k != "mask_suffix" and v == "")}


def _nearest(names: list[str], known=ALL_KEYS) -> str:
    """``" Did you mean: fractionz → fractions?"`` for the known names nearest to misspelt ones; ""
    when none is near."""
    near = {name: difflib.get_close_matches(name, known, n=1) for name in names}
    hints = [f"{name} → {match[0]}" for name, match in near.items() if match]
    return f" Did you mean: {', '.join(hints)}?" if hints else ""


def results_options(settings: dict | str | None = None) -> ResultsOptions:
    """Notebook 04's ``SETTINGS``: its scoring and reporting options, checked (defaults for the
    names left out).

    Raises:
        ValueError: an unknown name (the nearest known one named) or a value of the wrong type.
    """
    if isinstance(settings, str):  # plain papermill passes -p SETTINGS '{"n_boot": 200}' as text
        settings = json.loads(settings) if settings.strip() else {}
    values = dict(settings or {})
    if unknown := sorted(set(values) - set(RESULTS_OPTIONS)):
        raise ValueError(f"SETTINGS has unknown name(s) {unknown}; notebook 04 takes "
                         f"{sorted(RESULTS_OPTIONS)} (python -m helpers.pipeline --list describes "
                         f"each).{_nearest(unknown, RESULTS_OPTIONS)}")
    for field in dataclasses.fields(ResultsOptions):
        value, kind = values.get(field.name, field.default), field.type
        wanted = {"bool": bool, "int": int}.get(kind)
        if wanted and (not isinstance(value, wanted)
                       or (wanted is int and isinstance(value, bool))):
            expected = "True or False" if wanted is bool else "a whole number"
            raise ValueError(f"SETTINGS[{field.name!r}] = {value!r} is not valid: expected "
                             f"{expected}.")
        if kind.startswith("str") and value is not None and not isinstance(value, str):
            raise ValueError(f"SETTINGS[{field.name!r}] = {value!r} is not valid: expected text.")
    if values.get("n_boot", 1) <= 0:
        raise ValueError(f"SETTINGS['n_boot'] = {values['n_boot']!r} is not valid: expected a "
                         f"number above 0.")
    return ResultsOptions(**values)


def _checked(name: str, value):
    choices = Study.__dataclass_fields__[name].metadata.get("choices", ())
    if choices and value not in choices:
        raise ValueError(f"{name.upper()} = {value!r} is not valid: expected one of "
                         f"{list(choices)}.")
    return str(value)


def _study_of(profile: str, values: dict) -> tuple[profiles.RunConfig, Study]:
    cfg = profiles.resolve_config(profile, image_size=values.get("image_size"),
                                  split_seed=values.get("split_seed"))
    data = {name: _checked(name, values[name]) for name in DATA_KEYS if name in values}
    # the profile's when empty; sizes checked
    data["data_source"] = chosen_source(data.get("data_source"), cfg)
    return (cfg,
            Study(profile=cfg.name, image_size=cfg.image_size, split_seed=cfg.split_seed, **data))


def choose(profile: str = "", settings: dict | None = None, **given) -> Choice:
    """Notebook 01: choose the study and record it (replacing an earlier one, and saying what
    changed).

    Args:
        profile: the profile; empty: :func:`helpers.profiles.default_profile_name`.
        settings: the notebook's ``SETTINGS`` (study settings only).
        **given: the notebook's own parameters, e.g. ``data_source=DATA_SOURCE, data_dir=DATA_DIR``.

    Raises:
        ValueError: an unknown name, an invalid value, or a training setting (set those in 02 or
            03).
    """
    values = _given(settings, given)
    if other := sorted(set(values) - set(STUDY_KEYS)):
        raise ValueError(f"{other} are not study settings: notebook 01 chooses the data and the "
                         f"profile; set training settings in notebook 02 or 03 (SETTINGS there).")
    cfg, chosen = _study_of(profile, values)
    before = read()
    write(chosen)
    changed = [f"{k} {getattr(before, k)!r} → {getattr(chosen, k)!r}" for k in STUDY_KEYS
               if before and getattr(before, k) != getattr(chosen, k)]
    print(f"study: {chosen.summary()}\nrecorded in {record_path()}: notebooks 02-04 follow it"
          + (f"\n(changed from the earlier study: {', '.join(changed)})" if changed else ""))
    return Choice(cfg, chosen, {})


def _mismatches(recorded: Study, profile: str, values: dict) -> list[str]:
    wanted = {"profile": profile, **{k: values[k] for k in STUDY_KEYS if k in values}}
    wrong = []
    for name, value in wanted.items():
        # "" is a mask suffix: no suffix
        if value is None or (value == "" and name != "mask_suffix"):
            continue
        have = getattr(recorded, name)
        same = (str(value) == str(have) if name not in ("image_size", "split_seed")
                else int(value) == have)
        if name == "data_dir" and not same:
            same = Path(str(value)).expanduser().resolve() == Path(str(have)).expanduser().resolve()
        if not same:
            wrong.append(f"{name.upper()} = {value!r}, but the study has {have!r}")
    return wrong


def follow(profile: str = "", settings: dict | None = None, **given) -> Choice:
    """Notebooks 02-04, the runner and the CLI: the study notebook 01 recorded, with training
    settings on top.

    Without a record (notebook 01 has not run in this home) the study is made from these values and
    the defaults, said, and recorded, so the notebooks after this one follow it too.

    Args:
        profile: empty: the study's; a name must be the study's.
        settings: the notebook's ``SETTINGS``: study settings (must equal the record's), training
            settings and grid options.
        **given: the notebook's own parameters, e.g. ``models="unet", fractions=FRACTIONS, lr=LR``.

    Returns:
        A :class:`Choice`: the run config, the study, and the grid options (``restart``,
        ``keep_last``, ``local_fallback``).

    Raises:
        StudyMismatch: a study setting differs from the record; the message names both and what to
            do.
        ValueError: an unknown name or an invalid value.
    """
    values = _given(settings, given)
    recorded, fresh = read(), False
    if recorded is None:
        _, recorded = _study_of(profile, values)
        fresh = True
    elif wrong := _mismatches(recorded, profile, values):
        raise StudyMismatch(f"{'; '.join(wrong)} (recorded by notebook 01 in {record_path()}). "
                            f"This notebook follows that study: leave these settings out. To start "
                            f"another study, run notebook 01 with the new values (it records them; "
                            f"the runs of the old study stay in results/runs/), or give this "
                            f"notebook another KIT_HOME to keep both studies side by side.")
    training = {k: v for k, v in values.items() if k in TRAINING_KEYS}
    cfg = profiles.resolve_config(recorded.profile, image_size=recorded.image_size,
                                  split_seed=recorded.split_seed,
                                  **training)  # every value checked before anything is recorded
    if fresh:
        write(recorded)
        print(f"No study recorded yet in {record_path()} (notebook 01 has not run in this home): "
              f"using {recorded.summary()}, and recording it.")
    else:
        print(f"study (recorded by notebook 01): {recorded.summary()}")
    options = {name: bool(values.get(name, False)) for name in GRID_OPTIONS}
    return Choice(cfg, recorded, options)


def prepare(config: profiles.RunConfig, chosen: Study):
    """The prepared data of the study (found at once when notebook 01 prepared it; else prepared
    here)."""
    return notebook_data(config, chosen.data_source, chosen.data_dir or None, chosen.protocol,
                         chosen.on_bad_file, chosen.download_mirror or None,
                         mask_suffix=chosen.mask_suffix)
