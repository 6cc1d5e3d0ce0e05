"""Checks of the exercises in which the student writes code (notebook 01 here; 02 and 03 in
:mod:`helpers.training.model_exercises`, 04 in :mod:`helpers.evaluation.exercises`).

The notebook gives a function with an empty body; the student completes it, and a check cell runs it
on known cases:

    def fraction_sizes(n_images, fractions):
        ...                                         # the student's code
    exercises.check_fraction_sizes(fraction_sizes)  # right · not yet, with a hint · not done yet

A body left as it was given (``...``, ``pass`` or ``raise NotImplementedError``) returns None or
raises NotImplementedError: the check then says "not done yet" and raises nothing, so a notebook run
top to bottom (nbval, papermill) passes with the exercise blank. Each check compares with the kit's
own computation, or, where the kit's answer depends on random draws, with a textbook formula it must
agree with.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

RIGHT, NOT_YET, NOT_DONE = "right", "not yet", "not done yet"


@dataclass(frozen=True)
class Verdict:
    """What a check found: ``status`` is ``right``, ``not yet`` or ``not done yet``; ``text`` says
    it in words."""

    status: str
    text: str

    def __repr__(self) -> str:  # the last line of a check cell shows this
        return self.text


def run_cases(student, cases: list[tuple]) -> tuple[list | None, Verdict | None]:
    """The student's answers to ``cases`` (argument tuples), or the verdict that ends the check
    early.

    Returns:
        ``(answers, None)``; or ``(None, verdict)`` when the function is still blank ("not done
        yet") or raised ("not yet", naming the error).
    """
    try:
        answers = [student(*args) for args in cases]
    except NotImplementedError:
        return None, Verdict(NOT_DONE, "not done yet: complete the function above, run its cell, "
                                       "then this one.")
    # the student's code may raise anything: say what, and keep the notebook going
    except Exception as error:
        return None, Verdict(NOT_YET, f"not yet: it raised {type(error).__name__}: {error}")
    if all(answer is None for answer in answers):
        return None, Verdict(NOT_DONE, "not done yet: complete the function above, run its cell, "
                                       "then this one.")
    return answers, None


def kit_fraction_sizes(n_images: int, fractions) -> list[int]:
    """Training images in each nested fraction of ``n_images`` under the seed protocol, as the kit
    prepares them."""
    from helpers.data import prep  # here, not at the top: the answer key only, when a check runs

    n_train = (list(prep.seed_split([str(k) for k in range(n_images)], seed=0).values())
               .count("train"))
    return [prep.fraction_size(n_train, f) for f in fractions]


def check_fraction_sizes(student) -> Verdict:
    """Notebook 01: ``student(n_images, fractions)`` must give the training images of each nested
    fraction."""
    fractions = (0.1, 0.25, 0.5, 1.0)
    cases = [(n, fractions) for n in (200, 400, 2594, 60)]
    answers, early = run_cases(student, cases)
    if early:
        return early
    for (n, _), got in zip(cases, answers):
        want = kit_fraction_sizes(n, fractions)
        if _as_ints(got) != want:
            hint = ("first the training split: round(0.7 × n_images); then each fraction of it, "
                    "with Python's round() as the kit does (it rounds halves to even: round(10.5) "
                    "is 10)")
            return Verdict(NOT_YET, f"not yet: for {n} images you gave {got}, the kit prepares "
                                    f"{want}. Hint: {hint}.")
    return Verdict(RIGHT, f"right: e.g. 2594 images → {kit_fraction_sizes(2594, fractions)} "
                          f"training images at 10, 25, 50 and 100 %, as the kit prepares them.")


def _as_ints(answer) -> list[int] | None:
    """A list of whole numbers (list, tuple or array), else None."""
    try:
        values = np.asarray(answer, dtype=np.float64).ravel()
    except (TypeError, ValueError):
        return None
    return [int(v) for v in values] if np.all(values == np.round(values)) else None
