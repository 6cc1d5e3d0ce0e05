"""The check of notebook 04's code exercise: a bootstrap confidence interval written by the student.

    def bootstrap_ci(values, n_boot, seed):
        ...                                         # the student's code
    exercises.check_bootstrap_ci(bootstrap_ci)      # right · not yet, with a hint · not done yet

It follows :mod:`helpers.training.exercises` (the verdicts, and "not done yet" for a blank body),
and compares with the kit's own bootstrap (:mod:`helpers.evaluation.stats`).
"""
from __future__ import annotations

import numpy as np

from helpers.evaluation import stats
from helpers.training.exercises import NOT_DONE, NOT_YET, RIGHT, Verdict, run_cases  # noqa: F401


def _normal_interval(values: np.ndarray) -> tuple[float, float]:
    """mean ± 1.96 · sd / √n (sd of the values as the bootstrap sees them, ddof 0): the textbook 95
    % CI."""
    half = 1.96 * values.std() / np.sqrt(values.size)
    return values.mean() - half, values.mean() + half


def _skewed_scores() -> np.ndarray:
    """20 per-image Dice scores, most high and four failures: a skewed sample, where the percentile
    bootstrap and the normal approximation differ by about 0.016 at each end."""
    rng = np.random.default_rng(2019)
    return np.r_[rng.uniform(0.85, 0.97, 16), rng.uniform(0.0, 0.15, 4)]


def check_bootstrap_ci(student, tolerance: float = 0.004, skew_tolerance: float = 0.006) -> Verdict:
    """Notebook 04: ``student(values, n_boot, seed)`` must give the 95 % percentile-bootstrap CI of
    the mean.

    Three cases: 40 symmetric values (the bootstrap matches the normal interval to about 0.002 with
    20,000 resamples, so a 90 % or 99 % interval, or the spread of the values, is off by more); 20
    skewed values, where it must match the kit's bootstrap with 200,000 resamples (the normal
    interval mean ± 1.96·sd/√n is off by about 0.016 there, and is rejected); and ten equal values,
    which must give a zero-width interval.
    """
    values, skewed = np.random.default_rng(2019).uniform(0.4, 1.0, 40), _skewed_scores()
    cases = [(values, 20_000, 0), (skewed, 20_000, 0), (np.full(10, 0.8), 200, 1)]
    answers, early = run_cases(student, cases)
    if early:
        return early
    try:
        pairs = [(float(a[0]), float(a[1])) for a in answers]
    except (TypeError, IndexError, ValueError):
        return Verdict(NOT_YET, f"not yet: return two numbers, (low, high); you returned "
                                f"{answers[0]!r}.")
    (low, high), (s_low, s_high), (flat_low, flat_high) = pairs
    hint = ("resample the values with replacement (same size) n_boot times, take each resample's "
            "mean, and return the 2.5th and 97.5th percentiles of those means")
    want = _normal_interval(values)
    if max(abs(low - want[0]), abs(high - want[1])) > tolerance:
        return Verdict(NOT_YET, f"not yet: you gave ({low:.3f}, {high:.3f}); the 95 % CI of this "
                                f"mean is about ({want[0]:.3f}, {want[1]:.3f}). Hint: {hint}.")
    boot = stats.percentile_interval(stats.bootstrap_means(skewed, 200_000, 0))
    normal = _normal_interval(skewed)
    if max(abs(s_low - boot[0]), abs(s_high - boot[1])) > skew_tolerance:
        like_normal = max(abs(s_low - normal[0]), abs(s_high - normal[1])) <= skew_tolerance
        why = ("that is the normal approximation mean ± 1.96·sd/√n, which is symmetric; on these "
               "skewed scores the bootstrap's interval is not. " if like_normal else "")
        return Verdict(NOT_YET, f"not yet: on 20 skewed scores you gave ({s_low:.3f}, "
                                f"{s_high:.3f}), the percentile bootstrap gives about "
                                f"({boot[0]:.3f}, {boot[1]:.3f}); {why}Hint: {hint}.")
    if abs(flat_low - 0.8) > 1e-9 or abs(flat_high - 0.8) > 1e-9:
        return Verdict(NOT_YET, f"not yet: ten values all 0.8 must give (0.8, 0.8), you gave "
                                f"({flat_low}, {flat_high}).")
    return Verdict(RIGHT, f"right: ({low:.3f}, {high:.3f}), and the textbook mean ± 1.96·sd/√n "
                          f"gives ({want[0]:.3f}, {want[1]:.3f}): for symmetric scores they agree. "
                          f"On the skewed scores yours is ({s_low:.3f}, {s_high:.3f}), the "
                          f"formula's ({normal[0]:.3f}, {normal[1]:.3f}): the bootstrap follows "
                          f"the skew.")
