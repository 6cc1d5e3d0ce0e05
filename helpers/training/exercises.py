"""Checks of the exercises in which the student writes code (notebooks 01 and 04; 02 and 03 may add theirs).

The notebook gives a function with an empty body; the student completes it, and a check cell runs it on known
cases:

    def fraction_sizes(n_images, fractions):
        ...                                         # the student's code
    exercises.check_fraction_sizes(fraction_sizes)  # right · not yet, with a hint · not done yet

A body left as it was given (``...``, ``pass`` or ``raise NotImplementedError``) returns None or raises
NotImplementedError: the check then says "not done yet" and raises nothing, so a notebook run top to bottom
(nbval, papermill) passes with the exercise blank. Each check compares with the kit's own computation, or, where
the kit's answer depends on random draws, with a textbook formula it must agree with.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

RIGHT, NOT_YET, NOT_DONE = "right", "not yet", "not done yet"


@dataclass(frozen=True)
class Verdict:
    """What a check found: ``status`` is ``right``, ``not yet`` or ``not done yet``; ``text`` says it in words."""

    status: str
    text: str

    def __repr__(self) -> str:  # the last line of a check cell shows this
        return self.text


def run_cases(student, cases: list[tuple]) -> tuple[list | None, Verdict | None]:
    """The student's answers to ``cases`` (argument tuples), or the verdict that ends the check early.

    Returns:
        ``(answers, None)``; or ``(None, verdict)`` when the function is still blank ("not done yet") or raised
        ("not yet", naming the error).
    """
    try:
        answers = [student(*args) for args in cases]
    except NotImplementedError:
        return None, Verdict(NOT_DONE, "not done yet: complete the function above, run its cell, then this one.")
    except Exception as error:  # the student's code may raise anything: say what, and keep the notebook going
        return None, Verdict(NOT_YET, f"not yet: it raised {type(error).__name__}: {error}")
    if all(answer is None for answer in answers):
        return None, Verdict(NOT_DONE, "not done yet: complete the function above, run its cell, then this one.")
    return answers, None


def kit_fraction_sizes(n_images: int, fractions) -> list[int]:
    """Training images in each nested fraction of ``n_images`` under the seed protocol, as the kit prepares them."""
    from helpers.data import prep  # here, not at the top: the answer key only, when a check runs

    n_train = list(prep.seed_split([str(k) for k in range(n_images)], seed=0).values()).count("train")
    return [prep.fraction_size(n_train, f) for f in fractions]


def check_fraction_sizes(student) -> Verdict:
    """Notebook 01: ``student(n_images, fractions)`` must give the training images of each nested fraction."""
    fractions = (0.1, 0.25, 0.5, 1.0)
    cases = [(n, fractions) for n in (200, 400, 2594, 60)]
    answers, early = run_cases(student, cases)
    if early:
        return early
    for (n, _), got in zip(cases, answers):
        want = kit_fraction_sizes(n, fractions)
        if _as_ints(got) != want:
            hint = ("first the training split: round(0.7 × n_images); then each fraction of it, with Python's "
                    "round() as the kit does (it rounds halves to even: round(10.5) is 10)")
            return Verdict(NOT_YET, f"not yet: for {n} images you gave {got}, the kit prepares {want}. Hint: {hint}.")
    return Verdict(RIGHT, f"right: e.g. 2594 images → {kit_fraction_sizes(2594, fractions)} training images at "
                          f"10, 25, 50 and 100 %, as the kit prepares them.")


def _as_ints(answer) -> list[int] | None:
    """A list of whole numbers (list, tuple or array), else None."""
    try:
        values = np.asarray(answer, dtype=np.float64).ravel()
    except (TypeError, ValueError):
        return None
    return [int(v) for v in values] if np.all(values == np.round(values)) else None


def _normal_interval(values: np.ndarray) -> tuple[float, float]:
    """mean ± 1.96 · sd / √n (sd of the values as the bootstrap sees them, ddof 0): the textbook 95 % CI."""
    half = 1.96 * values.std() / np.sqrt(values.size)
    return values.mean() - half, values.mean() + half


def _skewed_scores() -> np.ndarray:
    """20 per-image Dice scores, most high and four failures: a skewed sample, where the percentile
    bootstrap and the normal approximation differ by about 0.016 at each end."""
    rng = np.random.default_rng(2019)
    return np.r_[rng.uniform(0.85, 0.97, 16), rng.uniform(0.0, 0.15, 4)]


def check_bootstrap_ci(student, tolerance: float = 0.004, skew_tolerance: float = 0.006) -> Verdict:
    """Notebook 04: ``student(values, n_boot, seed)`` must give the 95 % percentile-bootstrap CI of the mean.

    Three cases: 40 symmetric values (the bootstrap matches the normal interval to about 0.002 with
    20,000 resamples, so a 90 % or 99 % interval, or the spread of the values, is off by more); 20
    skewed values, where it must match the kit's bootstrap with 200,000 resamples (the normal
    interval mean ± 1.96·sd/√n is off by about 0.016 there, and is rejected); and ten equal values,
    which must give a zero-width interval.
    """
    from helpers.evaluation import stats  # the answer key only, when a check runs

    values, skewed = np.random.default_rng(2019).uniform(0.4, 1.0, 40), _skewed_scores()
    cases = [(values, 20_000, 0), (skewed, 20_000, 0), (np.full(10, 0.8), 200, 1)]
    answers, early = run_cases(student, cases)
    if early:
        return early
    try:
        pairs = [(float(a[0]), float(a[1])) for a in answers]
    except (TypeError, IndexError, ValueError):
        return Verdict(NOT_YET, f"not yet: return two numbers, (low, high); you returned {answers[0]!r}.")
    (low, high), (s_low, s_high), (flat_low, flat_high) = pairs
    hint = ("resample the values with replacement (same size) n_boot times, take each resample's "
            "mean, and return the 2.5th and 97.5th percentiles of those means")
    want = _normal_interval(values)
    if max(abs(low - want[0]), abs(high - want[1])) > tolerance:
        return Verdict(NOT_YET, f"not yet: you gave ({low:.3f}, {high:.3f}); the 95 % CI of this mean is about "
                                f"({want[0]:.3f}, {want[1]:.3f}). Hint: {hint}.")
    boot = stats.percentile_interval(stats.bootstrap_means(skewed, 200_000, 0))
    normal = _normal_interval(skewed)
    if max(abs(s_low - boot[0]), abs(s_high - boot[1])) > skew_tolerance:
        like_normal = max(abs(s_low - normal[0]), abs(s_high - normal[1])) <= skew_tolerance
        why = ("that is the normal approximation mean ± 1.96·sd/√n, which is symmetric; on these "
               "skewed scores the bootstrap's interval is not. " if like_normal else "")
        return Verdict(NOT_YET, f"not yet: on 20 skewed scores you gave ({s_low:.3f}, {s_high:.3f}), "
                                f"the percentile bootstrap gives about ({boot[0]:.3f}, {boot[1]:.3f}); "
                                f"{why}Hint: {hint}.")
    if abs(flat_low - 0.8) > 1e-9 or abs(flat_high - 0.8) > 1e-9:
        return Verdict(NOT_YET, f"not yet: ten values all 0.8 must give (0.8, 0.8), you gave ({flat_low}, {flat_high}).")
    return Verdict(RIGHT, f"right: ({low:.3f}, {high:.3f}), and the textbook mean ± 1.96·sd/√n gives "
                          f"({want[0]:.3f}, {want[1]:.3f}): for symmetric scores they agree. On the "
                          f"skewed scores yours is ({s_low:.3f}, {s_high:.3f}), the formula's "
                          f"({normal[0]:.3f}, {normal[1]:.3f}): the bootstrap follows the skew.")
