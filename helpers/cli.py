"""One way errors reach a command-line user: one line on stderr and an exit code, the traceback only when asked.

    def main(argv=None) -> int:
        return cli.run(_main, argv)      # _main(argv) parses its arguments and does the work

The kit's own errors (a bad value, a missing or broken file, a dataset problem, an unreadable checkpoint) are
``ValueError``, ``OSError``, ``RuntimeError`` or ``ArithmeticError`` with a message that names the file and
says what to do: :func:`run` prints that message as ``✗ <message>`` and returns 1, or 2 for a value that is
wrong where it enters (:class:`BadValue`, as argparse does for its own usage errors). ``--debug`` anywhere on
the command line (or ``KIT_DEBUG=1``) lets the traceback through instead. Anything else (a ``TypeError``, an
``AttributeError``: a bug in the kit) keeps its traceback, so it is reported rather than hidden.

This module sits in the lowest layer: every command line of the kit may use it.
"""
from __future__ import annotations

import argparse
import math
import os
import sys
from collections.abc import Callable

DEBUG_FLAG = "--debug"
EXPECTED = (ValueError, OSError, RuntimeError, ArithmeticError)  # what the kit raises on purpose


class BadValue(ValueError):
    """A command-line value or setting that is wrong where it enters (exit code 2)."""


def add_debug(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Document ``--debug`` in a parser's help (:func:`run` reads and removes it before the parser sees it)."""
    parser.add_argument(DEBUG_FLAG, action="store_true", help="show the full traceback of an error")
    return parser


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
