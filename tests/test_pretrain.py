"""agents.pretrain: the core's warm starts, on random glimpses and in set form on exact pixels."""

from __future__ import annotations

import pytest
import torch

from agents.pretrain import prefix_logits, pretrain_core_on_pixels
from envs.data import load_mnist
from envs.perception import PerceptionConfig, PerceptionCore
from envs.sampler import pixel_centres


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


@pytest.mark.parametrize("encoding", ["plain", "embedding"])
def test_mask_logits_equal_the_replay_of_the_masked_pixels(make_core, test_split, encoding):
    from agents.pretrain import mask_logits

    core = make_core(2, PerceptionConfig(channels=6, n_bins=3, hidden=16, encoding=encoding))
    images = test_split.images[:4].flatten(1).float() / 255.0
    generator = torch.Generator().manual_seed(0)
    mask = torch.rand(4, 784, generator=generator) < torch.tensor([[0.01], [0.05], [0.3], [0.0]])
    logits = mask_logits(core, images, mask)
    for row in range(4):
        (pixels,) = mask[row].nonzero(as_tuple=True)
        order = pixels[torch.randperm(len(pixels), generator=generator)]
        if len(order) == 0:  # nothing read: the empty histogram
            expected = core(core.initial_histogram(1))[0]
        else:
            coords = pixel_centres()[order][None]
            expected = core.replay(coords, images[row, order][None])[-1, 0]
        torch.testing.assert_close(logits[row], expected, atol=1e-4, rtol=1e-4)
    with torch.no_grad():
        core.rso.linear.weight[:, -1] = 0.1
    with pytest.raises(ValueError, match="state weights at zero"):
        mask_logits(core, images, mask)
