"""The weights' moving average: its decay, its warm-up, its buffers and its checkpoint state."""
import pytest
import torch
from torch import nn

from helpers.training.averaging import WeightAverage, decay_for


def _model(value: float) -> nn.Module:
    model = nn.Sequential(nn.Conv2d(1, 1, 1, bias=False), nn.BatchNorm2d(1))
    with torch.no_grad():
        model[0].weight.fill_(value)
    return model


def test_the_decay_averages_over_the_given_number_of_epochs():
    assert decay_for(1.0, 100) == pytest.approx(0.99)
    assert decay_for(0.5, 12) == pytest.approx(1 - 1 / 6)
    assert decay_for(0.01, 10) == 0.0  # less than a step: the average is the weights
    with pytest.raises(ValueError, match="above 0"):
        decay_for(0.0, 10)


def test_each_update_moves_the_average_by_the_warmed_up_decay():
    model, expected = _model(0.0), 0.0
    average = WeightAverage(model, decay=0.9)
    for n, value in enumerate([1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0, 10.0], 1):
        model[0].weight.data.fill_(value)
        model[1].num_batches_tracked.fill_(n)
        average.update(model)
        decay = min(0.9, (1 + n) / (10 + n))  # 2/11, 3/12, ... until 0.9
        expected = decay * expected + (1 - decay) * value
        assert average.model[0].weight.item() == pytest.approx(expected, rel=1e-6)
        assert average.model[1].num_batches_tracked.item() == n  # whole numbers are copied
    assert average.updates == 10 and not average.model.training
    assert not any(p.requires_grad for p in average.model.parameters())


def test_the_average_goes_on_from_its_state_dict():
    model = _model(1.0)
    first = WeightAverage(model, decay=0.5)
    first.update(model)
    second = WeightAverage(_model(0.0), decay=0.5)
    second.load_state_dict(first.state_dict())
    model[0].weight.data.fill_(3.0)
    first.update(model)
    second.update(model)
    assert second.updates == 2
    assert torch.equal(first.model[0].weight, second.model[0].weight)
