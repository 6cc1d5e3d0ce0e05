"""Statistics of per-image scores: bootstrap confidence intervals and paired model comparisons.

Two models scored on the *same* test images give paired scores, so the question "is A better than
B?" is answered from the per-image differences ``a - b``: their mean, a percentile-bootstrap 95 %
confidence interval of that mean (resampling images), and a Wilcoxon signed-rank test (scipy). A
difference is called real when its interval excludes 0 and the Holm-adjusted p-value (:func:`holm`,
which keeps the chance of any false alarm among many comparisons at 5 %) is below 0.05.

Everything is seeded, so the same scores always give the same intervals.
"""
from __future__ import annotations

import numpy as np


def _finite(values) -> np.ndarray:
    values = np.asarray(values, dtype=np.float64).ravel()
    return values[np.isfinite(values)]


def bootstrap_means(values, n_boot: int = 2000, seed: int = 0) -> np.ndarray:
    """Means of ``n_boot`` resamples (with replacement, same size) of the finite values;
    (n_boot,)."""
    values = _finite(values)
    if values.size == 0:
        return np.full(n_boot, np.nan)
    rows = np.random.default_rng(seed).integers(0, values.size, size=(n_boot, values.size))
    return values[rows].mean(axis=1)


def bootstrap_ci(values, n_boot: int = 2000, level: float = 0.95,
                 seed: int = 0) -> tuple[float, float]:
    """Percentile-bootstrap confidence interval of the mean of per-image values.

    Args:
        values: per-image scores (NaN and inf are left out).
        n_boot: resamples.
        level: coverage, e.g. 0.95.
        seed: resampling seed.

    Returns:
        ``(low, high)``; ``(nan, nan)`` without finite values; one value gives ``(v, v)``.
    """
    return percentile_interval(bootstrap_means(values, n_boot, seed), level)


def percentile_interval(resampled, level: float = 0.95) -> tuple[float, float]:
    """The central ``level`` interval of bootstrap statistics, e.g. means or differences of means
    (NaN ignored)."""
    resampled = np.asarray(resampled, dtype=np.float64)
    if np.isnan(resampled).all():
        return float("nan"), float("nan")
    tail = 100 * (1 - level) / 2
    low, high = np.nanpercentile(resampled, [tail, 100 - tail])
    return float(low), float(high)


def wilcoxon_p(differences) -> float:
    """Two-sided Wilcoxon signed-rank p-value of paired differences (1.0 when all are zero).

    Returns NaN when scipy is missing or there are fewer than two differences.
    """
    differences = _finite(differences)
    if differences.size < 2:
        return float("nan")
    if np.all(differences == 0):
        return 1.0
    try:
        from scipy.stats import (  # heavy (seconds to import): only once a p-value is asked for
            wilcoxon,
        )
    except ImportError:  # scipy is a kit requirement; this keeps the bootstrap usable without it
        return float("nan")
    return float(wilcoxon(differences, zero_method="wilcox").pvalue)


def paired_difference(a, b, n_boot: int = 2000, level: float = 0.95, seed: int = 0) -> dict:
    """Compare two models' per-image scores on the same images, in the same order.

    Args:
        a: per-image scores of model A, shape (N,).
        b: per-image scores of model B, shape (N,).
        n_boot, level, seed: see :func:`bootstrap_ci`.

    Returns:
        ``{"n", "mean_a", "mean_b", "mean_diff", "ci_low", "ci_high", "p_wilcoxon", "a_wins"}``:
        the difference is A − B; ``a_wins`` is the fraction of images where A scores higher.

    Raises:
        ValueError: if ``a`` and ``b`` differ in length.
    """
    a, b = np.asarray(a, np.float64).ravel(), np.asarray(b, np.float64).ravel()
    if a.shape != b.shape:
        raise ValueError(f"paired scores must cover the same images: "
                         f"got {a.size} and {b.size} values.")
    keep = np.isfinite(a) & np.isfinite(b)
    diff = a[keep] - b[keep]
    low, high = bootstrap_ci(diff, n_boot, level, seed)
    return {"n": int(keep.sum()), "mean_a": float(a[keep].mean()) if keep.any() else float("nan"),
            "mean_b": float(b[keep].mean()) if keep.any() else float("nan"),
            "mean_diff": float(diff.mean()) if diff.size else float("nan"), "ci_low": low,
            "ci_high": high, "p_wilcoxon": wilcoxon_p(diff),
            "a_wins": float((diff > 0).mean()) if diff.size else float("nan")}


def holm(pvalues) -> np.ndarray:
    """Holm–Bonferroni adjusted p-values (same order as given; NaN stays NaN)."""
    p = np.asarray(pvalues, dtype=np.float64)
    out = np.full_like(p, np.nan)
    ok = np.flatnonzero(np.isfinite(p))
    order = ok[np.argsort(p[ok], kind="stable")]
    running = 0.0
    for rank, k in enumerate(order):
        running = max(running, min(1.0, (len(order) - rank) * p[k]))
        out[k] = running
    return out


def verdict(name_a: str, name_b: str, ci_low: float, ci_high: float, p: float = float("nan"),
            alpha: float = 0.05) -> str:
    """Plain words for a paired difference A − B: who is better, or that the data cannot tell.

    A model is called better only when the CI of A − B excludes 0 and, if a p-value is given
    (e.g. Holm-adjusted Wilcoxon), it is below ``alpha``.
    """
    if np.isfinite(p) and p >= alpha:
        return "no clear difference"
    if np.isfinite(ci_low) and ci_low > 0:
        return f"{name_a} better"
    if np.isfinite(ci_high) and ci_high < 0:
        return f"{name_b} better"
    return "no clear difference"


def between_seeds(means) -> dict:
    """Spread of one model's mean score over several initialisation seeds (same split, same test
    images).

    Returns:
        ``n``, ``mean``, ``std`` (sample standard deviation, 0 for one seed), ``min`` and ``max``.
    """
    values = _finite(means)
    return {"n": len(values), "mean": float(values.mean()) if len(values) else float("nan"),
            "std": float(values.std(ddof=1)) if len(values) > 1 else 0.0,
            "min": float(values.min()) if len(values) else float("nan"),
            "max": float(values.max()) if len(values) else float("nan")}
