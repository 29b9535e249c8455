"""agents.pretrain: the core's warm starts, on random glimpses and in set form on exact pixels."""

from __future__ import annotations

import pytest
import torch

from agents.pretrain import prefix_logits, pretrain_core_on_pixels
from envs.data import load_mnist
from envs.perception import PerceptionConfig, PerceptionCore


@pytest.mark.parametrize("encoding", ["plain", "learned"])
def test_prefix_logits_are_the_replay_of_an_order_free_core(encoding):
    """Set form (one pass, prefix sums) equals replaying the glimpses one at a time, while the state
    weights are zero; with them non-zero the core is no longer order-free and the two differ."""
    torch.manual_seed(0)
    core = PerceptionCore(PerceptionConfig(8, 4, encoding=encoding))
    coords = torch.randint(0, 28, (5, 7, 2)).float()
    values = torch.rand(5, 7)
    torch.testing.assert_close(prefix_logits(core, coords, values), core.replay(coords, values))
    with torch.no_grad():
        core.rso.linear.weight[:, core.encoding.features :].normal_(std=0.1)
    assert not torch.allclose(prefix_logits(core, coords, values), core.replay(coords, values))


def test_pretraining_on_pixels_learns_and_keeps_the_core_order_free():
    data = load_mnist("test")
    torch.manual_seed(0)
    core = PerceptionCore(PerceptionConfig(8, 4))
    losses = []
    pretrain_core_on_pixels(core, data, 30, batch_size=64, pixels=20, report=lambda step, loss: losses.append(loss))
    assert len(losses) == 30 and sum(losses[-5:]) < sum(losses[:5])
    assert not core.rso.linear.weight[:, core.encoding.features :].any()  # still a plain SoftOrdering
    with pytest.raises(ValueError, match="needs the core's state weights at zero"):
        with torch.no_grad():
            core.rso.linear.weight[0, -1] = 0.5
        pretrain_core_on_pixels(core, data, 1)
    with pytest.raises(ValueError, match="1 <= pixels <= 784"):
        pretrain_core_on_pixels(PerceptionCore(), data, 1, pixels=0)
