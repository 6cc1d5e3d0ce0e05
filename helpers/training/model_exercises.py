"""Checks of the code-writing exercises of notebooks 02 and 03 (the verdicts of
:mod:`helpers.training.exercises`).

- 02: ``dice_from_counts(pred, mask)``, one image's Dice from its confusion counts, against the
  kit's metric.
- 03: ``pruned_forward(model, images, depth)``, UNet++ cut at depth L by hand, against the kit's
  pruned model; it must compute only the nodes ``x_i_j`` with ``i + j ≤ L``.

A blank function (``...`` or ``raise NotImplementedError``) gets "not done yet" and raises nothing,
so a notebook run top to bottom still passes; a wrong one gets "not yet" with a hint; a right one
"right".
"""
from __future__ import annotations

import copy

import numpy as np
import torch

from helpers.models import build_model
from helpers.training import metrics
from helpers.training.exercises import NOT_YET, RIGHT, Verdict, run_cases


def _square(side: int, top: int, left: int, size: int) -> np.ndarray:
    """A bool (side, side) mask with a size × size square at (top, left)."""
    mask = np.zeros((side, side), bool)
    mask[top:top + size, left:left + size] = True
    return mask


def kit_dice(pred: np.ndarray, mask: np.ndarray) -> float:
    """One image's Dice as the kit computes it (confusion counts, then 2·TP / (2·TP + FP + FN); both
    empty → 1)."""
    return float(metrics.dice(*metrics.confusion_counts(pred[None], mask[None]))[0])


def _dice_cases() -> list[tuple[np.ndarray, np.ndarray]]:
    """(pred, mask) pairs with a lesion: shifted, identical, disjoint, a miss, a false alarm on a
    blank mask."""
    blank = np.zeros((8, 8), bool)
    return [(_square(8, 3, 3, 4), _square(8, 2, 2, 4)), (_square(8, 2, 2, 4), _square(8, 2, 2, 4)),
            (_square(8, 0, 0, 2), _square(8, 5, 5, 3)), (blank, _square(8, 1, 1, 5)),
            (_square(8, 6, 6, 2), blank)]


def check_dice_from_counts(student) -> Verdict:
    """Notebook 02: ``student(pred, mask)`` (bool (H, W) each) must give that image's Dice, as the
    kit does."""
    cases = _dice_cases()
    answers, early = run_cases(student, cases)
    if early:
        return early
    for (pred, mask), got in zip(cases, answers):
        want = kit_dice(pred, mask)
        if got is None or not np.isclose(float(got), want, atol=1e-6):
            tp, fp, fn = (pred & mask).sum(), (pred & ~mask).sum(), (~pred & mask).sum()
            hint = ("that is the IoU, TP / (TP + FP + FN); Dice counts the overlap twice"
                    if got is not None and np.isclose(float(got), tp / max(tp + fp + fn, 1)) else
                    "TP = (pred & mask).sum(), FP = (pred & ~mask).sum(), "
                    "FN = (~pred & mask).sum(); Dice = 2·TP / (2·TP + FP + FN)")
            return Verdict(NOT_YET, f"not yet: with TP {tp}, FP {fp}, FN {fn} you gave {got}, the "
                                    f"kit {want:.4f}. Hint: {hint}.")
    return _check_empty(student)


def _check_empty(student) -> Verdict:
    """The last case: nothing to find and nothing found."""
    blank = np.zeros((8, 8), bool)
    answers, early = run_cases(student, [(blank, blank)])
    got = None if early else answers[0]
    if got is None or not np.isclose(float(got), 1.0):
        return Verdict(NOT_YET, "not yet: every image with a lesion is right, but an empty mask "
                                f"predicted empty gave {got if early is None else early.text}. "
                                "Hint: 2·TP + FP + FN is 0 there; the kit counts a correct 'no "
                                "lesion here' as a perfect 1.")
    return Verdict(RIGHT, "right: the same Dice as the kit's metric on all six images, the empty "
                          "one included.")


def _nodes_called(model: torch.nn.Module, run) -> tuple[object, list[str]]:
    """``run()``'s result and the names of the ``x_i_j`` blocks it called, in order."""
    called, handles = [], []
    for name, module in model.named_children():
        if name.startswith("x_"):
            handles.append(
                module.register_forward_hook(lambda _m, _i, _o, name=name: called.append(name)))
    try:
        return run(), called
    finally:
        for handle in handles:
            handle.remove()


def _pruning_hint(got, want: torch.Tensor, called: list[str], depth: int) -> str | None:
    """What is wrong with one depth's answer, or None when it is right."""
    needed = {f"x_{i}_{j}" for i in range(depth + 1) for j in range(depth + 1 - i)}
    if not isinstance(got, torch.Tensor) or got.shape != want.shape:
        shape = tuple(got.shape) if isinstance(got, torch.Tensor) else type(got).__name__
        return (f"depth {depth}: you returned {shape}, expected logits {tuple(want.shape)}. Hint: "
                f"return model.heads[depth - 1](x_0_depth), the head on node x_0_{depth}.")
    if set(called) - needed:
        return (f"depth {depth}: you computed {sorted(set(called) - needed)}, which head L{depth} "
                f"does not need. Hint: only the nodes with i + j ≤ {depth}, diagonal by diagonal.")
    if not torch.allclose(got, want, atol=1e-5):
        return (f"depth {depth}: the logits differ from the kit's pruned UNet++. Hint: x_i_0 = "
                f"block(pool(x_(i-1)_0)) (x_0_0 = block(images)); x_i_j = block(cat([x_i_0, …, "
                "x_i_(j-1), up(x_(i+1)_(j-1))], dim=1)), with getattr(model, f'x_{i}_{j}'), "
                "model.pool and model.up.")
    return None


def check_pruned_forward(student) -> Verdict:
    """Notebook 03: ``student(model, images, depth)`` must give UNet++'s logits cut at ``depth``,
    computing only the nodes that head needs (a tiny UNet++ with deep supervision, in eval mode,
    depths 1 to 4)."""
    torch.manual_seed(0)
    model = build_model("unetpp", "tiny", deep_supervision=True).eval()
    images = torch.rand(2, 3, 32, 32)
    for depth in range(1, model.config.depth + 1):
        pruned = copy.deepcopy(model)
        pruned.prune_depth = depth
        with torch.no_grad():
            want = pruned(images)
            answers, early = run_cases(
                lambda d: _nodes_called(model, lambda: student(model, images, d)), [(depth,)])
        if early:
            return early
        got, called = answers[0]
        if got is None and depth == 1:
            return run_cases(lambda: None, [()])[1]  # the body is still blank: not done yet
        hint = _pruning_hint(got, want, called, depth)
        if hint:
            return Verdict(NOT_YET, f"not yet: {hint}")
    return Verdict(RIGHT, "right: at every depth the same logits as the kit's pruned UNet++, from "
                          "only the nodes with i + j ≤ L (L1: 3 of the 15 nodes, L2: 6, L3: 10).")
