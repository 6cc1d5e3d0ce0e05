"""An exponential moving average (EMA) of a model's weights: a smoother model to validate and keep.

After every optimiser step the average moves a little towards the live weights:

    average = decay * average + (1 - decay) * weights

With ``decay = 1 - 1 / (epochs * steps per epoch)`` it remembers about the last ``epochs`` epochs.
Early on the decay is smaller, ``(1 + n) / (10 + n)`` after ``n`` updates, so the average is not
held back by the random start. Batch-norm statistics are averaged too; whole-number buffers (the
batch counter) are copied. :func:`helpers.training.engine.fit` validates the average and saves it
as ``best.pt`` when the ``ema_epochs`` setting is above 0; ``last.pt`` keeps both models, so a
resumed run goes on exactly where it stopped.
"""
from __future__ import annotations

import copy

import torch
from torch import nn


def decay_for(epochs: float, steps_per_epoch: int) -> float:
    """The per-step decay that averages over about ``epochs`` epochs of ``steps_per_epoch``
    steps."""
    if epochs <= 0 or steps_per_epoch <= 0:
        raise ValueError(f"an average over {epochs} epochs of {steps_per_epoch} steps: both must "
                         f"be above 0")
    return 1.0 - 1.0 / max(1.0, epochs * steps_per_epoch)


class WeightAverage:
    """The moving average of a model's weights, in a copy of the model.

    Args:
        model: the model being trained (not wrapped in DDP).
        decay: the largest per-step decay (:func:`decay_for`).
    """

    def __init__(self, model: nn.Module, decay: float) -> None:
        self.model = copy.deepcopy(model).eval().requires_grad_(False)
        self.decay = decay
        self.updates = 0

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """Move the average towards ``model``'s weights (call after every optimiser step)."""
        self.updates += 1
        decay = min(self.decay, (1 + self.updates) / (10 + self.updates))
        live = model.state_dict()
        for name, mean in self.model.state_dict().items():
            if mean.is_floating_point():
                mean.lerp_(live[name], 1.0 - decay)
            else:
                mean.copy_(live[name])

    def state_dict(self) -> dict:
        """What a checkpoint keeps: the averaged weights and the number of updates."""
        return {"model": self.model.state_dict(), "updates": self.updates}

    def load_state_dict(self, state: dict) -> None:
        """Go on from a checkpoint's :meth:`state_dict`."""
        self.model.load_state_dict(state["model"])
        self.updates = int(state["updates"])
