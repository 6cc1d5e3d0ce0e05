"""Run the notebooks in order, headlessly, with papermill: the whole study in one command.

    python -m helpers.pipeline --profile smoke
    python -m helpers.pipeline --profile t4 -p DATA_SOURCE folder -p DATA_DIR /path/to/isic

    python -m helpers.pipeline --list

Each notebook runs from ``notebooks/`` and receives only the parameters its own parameters
cell (the code cell tagged ``parameters``) declares, ``PROFILE`` included; a ``-p`` name that
no notebook of the run declares is refused before anything runs. ``--list`` shows each
notebook's parameters with their comments. The executed copies go to
``results/notebooks/<profile>/``. A notebook that fails stops the run, and the error names
the executed copy to open.
"""
from __future__ import annotations

import argparse
import ast
import io
import json
import os
import sys
import time
import tokenize
from pathlib import Path

from helpers import cli, paths, profiles
from helpers.data import study

NOTEBOOKS = ("01_data_prep.ipynb", "02_unet.ipynb", "03_unetpp_transunet.ipynb", "04_results.ipynb")
# the names each notebook's SETTINGS dict takes (declared in helpers.data.study and helpers.profiles): a -p NAME
# that a notebook's parameters cell does not declare goes into its SETTINGS when it is one of these
SETTINGS_KEYS = {"01_data_prep.ipynb": study.STUDY_KEYS, "02_unet.ipynb": study.ALL_KEYS,
                 "03_unetpp_transunet.ipynb": study.ALL_KEYS, "04_results.ipynb": tuple(study.RESULTS_OPTIONS)}


def notebooks_present(folder: Path | None = None) -> list[Path]:
    """The study's notebooks that exist, in order."""
    folder = folder or paths.repo_root() / "notebooks"
    return [folder / name for name in NOTEBOOKS if (folder / name).exists()]


def parse_value(text: str):
    """A parameter value from the command line: a Python literal if it is one, else the string."""
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def _parameters_cell(path: Path) -> str:
    """The source of the first code cell tagged ``parameters`` in a notebook.

    Args:
        path: the ``.ipynb`` file.

    Returns:
        The cell's source as one string.

    Raises:
        ValueError: the file is not a notebook, or it has no code cell tagged ``parameters``.
    """
    try:
        cells = json.loads(Path(path).read_text(encoding="utf-8"))["cells"]
    except (json.JSONDecodeError, KeyError, TypeError) as err:
        raise ValueError(f"{path} is not a readable notebook ({err}); open it in Jupyter to repair it") from None
    for cell in cells:
        if cell.get("cell_type") == "code" and "parameters" in cell.get("metadata", {}).get("tags", []):
            source = cell.get("source", "")
            return source if isinstance(source, str) else "".join(source)
    raise ValueError(f"{path} has no code cell tagged 'parameters'; tag the cell that assigns the notebook's "
                     f"parameters with 'parameters' (in Jupyter: View > Cell Toolbar > Tags)")


def _line_comments(source: str) -> dict[int, str]:
    """The comment on each line of ``source`` (1-based line number → text after ``#``, stripped)."""
    tokens = tokenize.generate_tokens(io.StringIO(source).readline)
    return {token.start[0]: token.string[1:].strip() for token in tokens if token.type == tokenize.COMMENT}


def notebook_parameters(path: Path) -> dict[str, str]:
    """The parameters a notebook declares in its parameters cell, with their comments.

    The parameters cell is the first code cell tagged ``parameters`` (what papermill replaces
    values after). Its source is parsed with :mod:`ast`; every name assigned at top level is a
    parameter, described by the comment on its line (``""`` when there is none).

    Args:
        path: the ``.ipynb`` file.

    Returns:
        Parameter name → comment, in the order the cell assigns them.

    Raises:
        ValueError: the notebook has no cell tagged ``parameters``, or that cell is not valid
            Python; the message names the file.
    """
    python = _parameters_cell(path)
    try:
        tree = ast.parse(python)
    except SyntaxError:
        # IPython magics and shell escapes are not Python: blank them, keeping the line numbers.
        python = "\n".join("" if line.lstrip().startswith(("%", "!")) else line for line in python.splitlines())
        try:
            tree = ast.parse(python)
        except SyntaxError as err:
            raise ValueError(f"{path}: the parameters cell is not valid Python (line {err.lineno}: {err.msg}); "
                             f"fix that cell so that it only assigns the parameters") from None
    comments = _line_comments(python)
    declared: dict[str, str] = {}
    for node in tree.body:
        if isinstance(node, ast.Assign):
            targets = node.targets
        elif isinstance(node, ast.AnnAssign) and node.value is not None:
            targets = [node.target]
        else:
            continue
        comment = comments.get(node.lineno) or comments.get(node.end_lineno or node.lineno, "")
        if comment.startswith("@param"):  # a Colab form field: its description is the #@markdown line above
            comment = _plain(comments.get(node.lineno - 1, "").removeprefix("@markdown"))
        for target in targets:
            for name in _assigned_names(target):
                declared.setdefault(name, comment)
    return declared


def _plain(markdown: str) -> str:
    """A ``#@markdown`` description as plain text (no bold or code marks)."""
    return markdown.replace("**", "").replace("`", "").strip()


def _assigned_names(target: ast.expr) -> list[str]:
    """The plain names an assignment target binds (``a``, ``a, b``, ``[a, *b]``; not ``a.b`` or ``a[0]``)."""
    if isinstance(target, ast.Name):
        return [target.id]
    if isinstance(target, (ast.Tuple, ast.List)):
        return [name for element in target.elts for name in _assigned_names(element)]
    if isinstance(target, ast.Starred):
        return _assigned_names(target.value)
    return []


def selected_notebooks(only: list[str] | None = None) -> list[Path]:
    """The notebooks a run executes, in order: those present, limited to the ``only`` prefixes if given."""
    return [nb for nb in notebooks_present() if not only or nb.name.startswith(tuple(only))]


def accepted(notebook: Path, params: dict[str, str]) -> set[str]:
    """The parameter names a notebook takes: those its parameters cell declares, and the names its SETTINGS takes."""
    routed = {key.upper() for key in SETTINGS_KEYS.get(notebook.name, ())} if "SETTINGS" in params else set()
    return set(params) | routed


def check_parameters(names, declared: dict[Path, dict[str, str]], only: list[str] | None = None) -> None:
    """Refuse parameter names that none of the notebooks of a run takes.

    Args:
        names: the parameter names given (e.g. the ``-p`` names).
        declared: notebook → its declared parameters (:func:`notebook_parameters`), for the
            notebooks that will run.
        only: the ``--only`` prefixes of the run, to point at a notebook they leave out.

    Raises:
        ValueError: names the unknown parameter(s) and lists, per notebook, the parameters it knows.
    """
    known = {name for nb, params in declared.items() for name in accepted(nb, params)}
    unknown = sorted(set(names) - known)
    if not unknown:
        return
    lines = [f"unknown parameter{'s' if len(unknown) > 1 else ''} {', '.join(unknown)}: "
             f"no notebook of this run takes {'them' if len(unknown) > 1 else 'it'}; "
             f"check the spelling against the parameters each notebook knows (python -m helpers.pipeline --list):"]
    lines += [f"  {nb.name}: {', '.join(sorted(params)) or '(none)'}" for nb, params in declared.items()]
    if not declared:
        lines.append("  (no notebook selected: check the --only prefixes)")
    if only:                                   # point at the left-out notebooks that do declare a name
        left_out = {}
        for nb in notebooks_present():
            if nb not in declared:
                try:
                    left_out[nb.name] = accepted(nb, notebook_parameters(nb))
                except ValueError:
                    continue
        for name in unknown:
            owners = [nb for nb, params in left_out.items() if name in params]
            if owners:
                lines.append(f"  ({name} is a parameter of {', '.join(owners)}, which --only leaves out)")
    raise ValueError("\n".join(lines))


def check_values(profile: str, parameters: dict, runs_01: bool) -> None:
    """Refuse invalid values, and study values that differ from the recorded study, before any notebook runs.

    Args:
        profile: the run's profile ("" : the study's).
        parameters: the parameters given, by notebook name (``LR``, ``DATA_SOURCE``, ``SETTINGS`` ...).
        runs_01: notebook 01 is part of the run (it records a new study, so nothing is compared with the old one).

    Raises:
        ValueError: an invalid value (the message names the setting and what it expects), or a study setting
            that differs from the record when notebook 01 does not run.
    """
    values = {name.lower(): value for name, value in parameters.items() if name.lower() in study.ALL_KEYS}
    values.update(parameters.get("SETTINGS") or {})
    study_values = {k: v for k, v in values.items() if k in study.STUDY_KEYS}
    training = {k: v for k, v in values.items() if k in study.TRAINING_KEYS}
    if runs_01 or study.read() is None:
        config, _ = study._study_of(profile, study_values)
    else:
        config = study.follow(profile, study_values).config
    profiles.resolve_config(config.name, **training, image_size=config.image_size)


def run_notebooks(profile: str, parameters: dict | None = None, only: list[str] | None = None,
                  out_dir: Path | None = None) -> list[Path]:
    """Execute the notebooks in order with papermill.

    Args:
        profile: profile name, passed as the ``PROFILE`` parameter to the notebooks that declare it.
        parameters: further notebook parameters (e.g. ``{"DATA_SOURCE": "folder"}``). Each must be
            declared by at least one notebook of the run, and each notebook receives only those
            its own parameters cell declares.
        only: run only notebooks whose names start with one of these prefixes (e.g. ``["01"]``).
        out_dir: where executed copies go (default ``results/notebooks/<profile>``).

    Returns:
        Paths of the executed notebooks.

    Raises:
        ValueError: before any notebook runs: a parameter that no notebook of the run declares
            (the message lists the parameters each one knows), or a notebook without a
            parameters cell (the message names the file).
        RuntimeError: a notebook failed; names the executed copy holding the traceback.
    """
    parameters = dict(parameters or {})
    declared = {notebook: notebook_parameters(notebook) for notebook in selected_notebooks(only)}
    if not declared:
        raise ValueError(f"--only {' '.join(only or [])}: no notebook's name starts with that; the notebooks are "
                         f"{', '.join(nb.name for nb in notebooks_present())}.")
    check_parameters(parameters, declared, only)
    check_values(profile, parameters, any(nb.name == NOTEBOOKS[0] for nb in declared))

    import papermill as pm  # heavy: only when notebooks run

    out_dir = Path(out_dir or paths.results_dir() / "notebooks" / (profile or "study"))
    out_dir.mkdir(parents=True, exist_ok=True)
    given = {"PROFILE": profile, **parameters}
    done = []
    for notebook, known in declared.items():
        params = notebook_values(notebook, known, given)
        target = out_dir / notebook.name
        start = time.perf_counter()
        print(f"▶ {notebook.name} (profile {profile}) → {target}", flush=True)
        try:  # headless: no one watches the curves while they train (each redraw would be saved)
            with paths.scoped_env(KIT_LIVE_PLOTS=os.environ.get("KIT_LIVE_PLOTS", "0")):
                pm.execute_notebook(notebook, target, parameters=params, cwd=str(notebook.parent),
                                    kernel_name="python3", progress_bar=False)
        except pm.PapermillExecutionError as err:
            raise RuntimeError(f"{notebook.name} failed ({err.ename}: {err.evalue}); the executed copy with "
                               f"the traceback is {target}") from None
        print(f"  done in {time.perf_counter() - start:.1f} s", flush=True)
        done.append(target)
    return done


def notebook_values(notebook: Path, known: dict[str, str], given: dict) -> dict:
    """The parameters one notebook receives: those its cell declares, and the rest of its names in ``SETTINGS``."""
    params = {name: value for name, value in given.items() if name in known}
    routed = {name.lower(): value for name, value in given.items()
              if name not in known and name.lower() in SETTINGS_KEYS.get(notebook.name, ()) and "SETTINGS" in known}
    if routed:
        params["SETTINGS"] = {**(given.get("SETTINGS") or {}), **routed}
    return params


def settings_table() -> str:
    """Every name a notebook's ``SETTINGS`` takes, with its description: derived from the declarations."""
    rows = [(name, study.Study.__dataclass_fields__[name].metadata.get("help", "set by notebook 01 (a RunConfig "
                                                                                 "setting)"))
            for name in study.DATA_KEYS]
    rows += [(name, profiles.describe_setting(name)) for name in profiles.SETTINGS if name in study.ALL_KEYS
             or name in ("image_size", "split_seed")]
    rows += list(study.GRID_OPTIONS.items())
    width = max(len(name) for name, _ in rows + list(study.RESULTS_OPTIONS.items()))
    return "\n".join(["SETTINGS names (01: the study's, the first ones; 02 and 03: all of them)"] +
                     [f"  {name:<{width}}  {text}" for name, text in rows] +
                     ["SETTINGS names of notebook 04 (how the runs are scored and reported)"] +
                     [f"  {name:<{width}}  {text}" for name, text in study.RESULTS_OPTIONS.items()])


def format_parameters(declared: dict[Path, dict[str, str]]) -> str:
    """A readable table of each notebook's parameters and their comments.

    Args:
        declared: notebook → its declared parameters (:func:`notebook_parameters`).

    Returns:
        One block per notebook: its name, then one line per parameter, names aligned.
    """
    blocks = []
    for notebook, params in declared.items():
        width = max((len(name) for name in params), default=0)
        lines = [f"{notebook.name} ({len(params)} parameter{'' if len(params) == 1 else 's'})"]
        lines += [f"  {name:<{width}}  {comment}".rstrip() for name, comment in params.items()]
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks)


def _main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m helpers.pipeline",
                                     description="Run the study's notebooks with papermill.")
    parser.add_argument("--profile", default="", choices=["", *profiles.PROFILES],
                        help="the profile (default: the recorded study's; without one, $KIT_PROFILE, else class on "
                             "Colab or with a GPU and cpu otherwise)")
    parser.add_argument("-p", "--parameter", nargs=2, action="append", default=[], metavar=("NAME", "VALUE"),
                        help="a notebook parameter or setting, e.g. -p DATA_SOURCE folder, -p LR 3e-4")
    parser.add_argument("--only", action="append", help="run only notebooks starting with this prefix")
    parser.add_argument("--list", action="store_true",
                        help="print each notebook's parameters with their comments, and run nothing")
    parser.add_argument("--out", default=None, help="the results folder (runs, executed notebooks, report; default: "
                                                    "$KIT_RESULTS_DIR, else the kit's results/)")
    cli.add_device(parser)
    cli.add_debug(parser)
    args = parser.parse_args(argv)
    cli.check_device(args.device)
    scoped = {paths.RESULTS_ENV: Path(args.out).resolve()} if args.out else {}
    if args.device:
        scoped[cli.DEVICE_ENV] = args.device  # the notebooks' kernels inherit it
    with paths.scoped_env(**scoped):
        return _run(args)


def _run(args: argparse.Namespace) -> int:
    start = time.perf_counter()
    if args.list:
        print(format_parameters({nb: notebook_parameters(nb) for nb in selected_notebooks(args.only)}))
        print("\n" + settings_table())
        return 0
    try:
        done = run_notebooks(args.profile, {k: parse_value(v) for k, v in args.parameter}, args.only)
    except ValueError as err:
        raise cli.BadValue(str(err)) from None
    print(f"✓ {len(done)} notebook(s) in {time.perf_counter() - start:.1f} s; executed copies in "
          f"{done[0].parent if done else '-'}")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point.

    Args:
        argv: the arguments (default ``sys.argv[1:]``).

    Returns:
        0 on success, 1 when a notebook failed, 2 when the request was refused before running
        (an unknown parameter or value, a study value that differs from the recorded study).
    """
    return cli.run(_main, argv)


if __name__ == "__main__":
    sys.exit(main())
