"""One way errors reach a command-line user: one line on stderr and an exit code, the traceback only when asked.

    def main(argv=None) -> int:
        return cli.run(_main, argv)      # _main(argv) parses its arguments and does the work

The kit's own errors (a bad value, a missing or broken file, a dataset problem, an unreadable checkpoint) are
``ValueError``, ``OSError``, ``RuntimeError`` or ``ArithmeticError`` with a message that names the file and
says what to do: :func:`run` prints that message as ``✗ <message>`` and returns 1, or 2 for a value that is
wrong where it enters (:class:`BadValue`, as argparse does for its own usage errors). ``--debug`` anywhere on
the command line (or ``KIT_DEBUG=1``) lets the traceback through instead. Anything else (a ``TypeError``, an
``AttributeError``: a bug in the kit) keeps its traceback, so it is reported rather than hidden.

Every command also takes ``--version`` (:func:`add_debug` adds it), names its output folder ``--out``, writes its lists
comma-separated (:func:`comma_list`), and, where it runs a model, takes ``--device`` (:func:`add_device`). An
installed kit (not a clone) says on its first line where it writes, when ``KIT_HOME`` does not say so.

This module sits in the lowest layer: every command line of the kit may use it.
"""
from __future__ import annotations

import argparse
import math
import os
import sys
from collections.abc import Callable
from pathlib import Path

from helpers import __version__, paths

DEBUG_FLAG = "--debug"
EXPECTED = (ValueError, OSError, RuntimeError, ArithmeticError)  # what the kit raises on purpose


class BadValue(ValueError):
    """A command-line value or setting that is wrong where it enters (exit code 2)."""


def add_debug(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Document ``--debug`` in a parser's help (:func:`run` reads and removes it before the parser sees it), and
    add ``--version``."""
    parser.add_argument(DEBUG_FLAG, action="store_true", help="show the full traceback of an error")
    parser.add_argument("--version", action="version", version=f"skin-lesion-kit {__version__}",
                        help="print the kit's version and exit")
    return parser


DEVICE_ENV = "KIT_DEVICE"  # the device of every model this process runs, when --device is left out
DEVICE_HELP = "cpu, cuda, cuda:N, or mps where torch has it (default: $KIT_DEVICE, else the GPU if there is one)"


def add_device(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add ``--device`` to a command that runs a model (read it with :func:`use_device`)."""
    parser.add_argument("--device", default=None, help=DEVICE_HELP)
    return parser


def check_device(device: str | None) -> None:
    """Refuse a device this machine does not have, naming it as such (not as a problem of a checkpoint).

    Raises:
        BadValue: not a device name, or a GPU that is not available here.
    """
    if device is None:
        return
    import torch  # heavy: only a command that runs a model gets here

    try:
        chosen = torch.device(device)
    except RuntimeError:
        raise BadValue(f"--device {device}: not a device name; use cpu, cuda, cuda:N or mps.") from None
    if chosen.type == "cuda" and not torch.cuda.is_available():
        raise BadValue(f"--device {device}: no CUDA GPU is available on this machine (torch.cuda.is_available() is "
                       "False); use --device cpu, or leave --device out (the GPU when there is one).")
    if chosen.type == "cuda" and (chosen.index or 0) >= torch.cuda.device_count():
        raise BadValue(f"--device {device}: this machine has {torch.cuda.device_count()} CUDA GPU(s); "
                       f"use cuda:0 to cuda:{torch.cuda.device_count() - 1}.")
    if chosen.type == "mps" and not (hasattr(torch.backends, "mps") and torch.backends.mps.is_available()):
        raise BadValue(f"--device {device}: Apple's MPS is not available on this machine; use --device cpu.")
    if chosen.type not in ("cpu", "cuda", "mps"):
        raise BadValue(f"--device {device}: the kit runs on cpu, cuda or mps; use one of them.")


def use_device(device: str | None) -> str | None:
    """Check ``--device`` and make it this process's device (``$KIT_DEVICE``, which
    :func:`helpers.training.devices.pick_device` reads); None leaves the choice as it was.

    Raises:
        BadValue: see :func:`check_device`.
    """
    check_device(device)
    if device is not None:
        os.environ[DEVICE_ENV] = device
    return device



def comma_list(values: str | list[str] | None) -> list[str] | None:
    """A list option's words: ``"unet,unetpp"`` (the kit's one syntax) or, from ``nargs="+"``, ``["unet", "unetpp"]``
    or ``["unet,unetpp"]``; empty items dropped. None stays None."""
    if values is None:
        return None
    values = [values] if isinstance(values, str) else values
    return [item.strip() for value in values for item in str(value).split(",") if item.strip()]


def model_config_pairs(text: str | None, known: dict[str, list[str]]) -> dict | None:
    """``--model-config unet=small,unetpp=r34`` as ``{"unet": "small", "unetpp": "r34"}`` (None: not given).

    Args:
        known: the registry's configurations per model (:func:`helpers.models.list_configs`).

    Raises:
        BadValue: not ``MODEL=CONFIG`` pairs, or a model or configuration ``known`` does not have.
    """
    if text is None:
        return None
    chosen = {}
    for item in comma_list(text):
        model, _, config = (part.strip() for part in item.partition("="))
        if model not in known or config not in known[model]:
            names = "; ".join(f"{m}: {', '.join(configs)}" for m, configs in known.items())
            raise BadValue(f"--model-config {item!r}: give MODEL=CONFIG pairs, comma-separated, e.g. unetpp=r34; "
                           f"the configs are {names}.")
        chosen[model] = config
    return chosen


def out_folder(out: str | None, *aliases: str | None, name: str = "--out") -> str | None:
    """The output folder a command was given: ``--out``, else the first older spelling given (a positional folder,
    ``--dest``, ``--results``); None when none was.

    Raises:
        BadValue: two different folders were given.
    """
    given = [value for value in (out, *aliases) if value]
    if len(set(given)) > 1:
        raise BadValue(f"two output folders given ({' and '.join(map(repr, dict.fromkeys(given)))}); give one, as {name}.")
    return str(check_out_folder(given[0], name)) if given else None


def check_out_folder(folder: str | os.PathLike, name: str = "the output folder") -> Path:
    """An output folder, refused before anything is written when the path is an existing file (or a link to one,
    or to nothing).

    Raises:
        BadValue: names the path and says what to give instead.
    """
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise BadValue(f"{name} {folder} is an existing file, not a folder; give a folder (it is created if "
                       f"needed), e.g. {folder.with_suffix('')}_out.")
    if folder.is_symlink() and not folder.exists():
        raise BadValue(f"{name} {folder} is a link to nothing ({os.readlink(folder)}); remove the link or give "
                       f"another folder.")
    return folder


def exit_code(err: BaseException) -> int:
    """2 for a value wrong where it enters, 1 for anything else that failed."""
    return 2 if isinstance(err, BadValue) else 1


def one_line(err: BaseException) -> str:
    """The message a user sees: the error's own text (its type too when the text alone says little)."""
    text = str(err).strip() or type(err).__name__
    return text if len(text) > 40 or type(err).__module__.startswith("helpers") else f"{type(err).__name__}: {text}"


def run(main: Callable[[list[str]], int | None], argv: list[str] | None = None) -> int:
    """Call ``main(argv)`` and turn the kit's errors into ``✗ message`` on stderr and an exit code.

    Args:
        main: the command's body; takes its arguments (without ``--debug``) and returns an exit code.
        argv: the arguments (default ``sys.argv[1:]``).

    Returns:
        ``main``'s exit code (None counts as 0); 1 or 2 after an error (see :func:`exit_code`); 130 on Ctrl-C.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = DEBUG_FLAG in argv or os.environ.get("KIT_DEBUG", "") not in ("", "0")
    argv = [a for a in argv if a != DEBUG_FLAG]
    if paths.installed() and not os.environ.get(paths.HOME_ENV) and not {"-h", "--help", "--version"} & set(argv):
        print(f"kit home: {paths.home_dir()} (data/ and results/ go here; set {paths.HOME_ENV} to choose another "
              "folder)", file=sys.stderr)
    try:
        return int(main(argv) or 0)
    except KeyboardInterrupt:
        print("✗ interrupted", file=sys.stderr)
        return 130
    except EXPECTED as err:
        if debug:
            raise
        hint = "" if isinstance(err, BadValue) else f" (run again with {DEBUG_FLAG} for the traceback)"
        print(f"✗ {one_line(err)}{hint}", file=sys.stderr)
        return exit_code(err)


def fraction(value: float | None, name: str) -> float | None:
    """A value that must be a finite number in [0, 1] (None passes: "not given").

    Raises:
        BadValue: it is not (the message names the setting and its value).
    """
    if value is not None and not (math.isfinite(value) and 0 <= value <= 1):
        raise BadValue(f"{name} {value} is not a number between 0 and 1; give e.g. 0.5.")
    return value


def positive_int(value: int, name: str) -> int:
    """A value that must be a whole number above 0.

    Raises:
        BadValue: it is not (the message names the setting and its value).
    """
    if isinstance(value, bool) or int(value) != value or value < 1:
        raise BadValue(f"{name} {value} is not a whole number above 0; give e.g. 8.")
    return int(value)
