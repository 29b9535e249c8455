"""envs.episode: one glimpse = read, observe, classify, reward; pure (the state given is never changed),
batched, and differentiable when gradients are on."""

from __future__ import annotations

import math

import pytest
import torch

from envs.data import NUM_CLASSES, load_mnist
from envs.episode import Candidates, EpisodeState, initial_state, pixel_coords, reset, step
from envs.perception import PerceptionConfig, PerceptionCore
from envs.sampler import Sampler, action_to_pixel


@pytest.fixture
def setup():
    torch.manual_seed(0)
    core = PerceptionCore(PerceptionConfig(channels=8, n_bins=4, encoding="learned"))
    data = load_mnist("test")
    return core, data.images[:5].float() / 255.0, data.labels[:5]


def snapshot(state: EpisodeState) -> dict:
    return {name: None if v is None else v.clone() for name, v in vars(state).items()}


def test_a_glimpse_is_read_observe_classify_with_the_dense_reward(setup):
    core, images, labels = setup
    sampler = Sampler("bilinear")
    state = initial_state(core, 5, 3, keep_reads=True)
    assert torch.equal(state.observation()[:, core.histogram_size :], torch.full((5, NUM_CLASSES), 0.1))
    before = snapshot(state)
    actions = torch.tensor([[0.1, -0.3], [1.5, 0.2], [-1.0, -1.0], [0.0, 0.0], [0.7, 0.9]])
    with torch.no_grad():
        out = step(state, actions, images, core, sampler, labels)
    coords = action_to_pixel(actions.clamp(-1, 1))
    values = sampler(images, coords)
    histogram = core.observe(state.histogram, coords, values)
    logits = core(histogram)
    assert torch.equal(out.coords, coords) and torch.equal(out.values, values)
    assert torch.equal(out.state.histogram, histogram) and torch.equal(out.logits, logits)
    assert torch.equal(out.state.observation(), core.observation(histogram, logits))
    gain = torch.log_softmax(logits, -1).gather(1, labels[:, None])[:, 0] + math.log(10)
    torch.testing.assert_close(out.reward, gain)
    assert torch.equal(out.correct, logits.argmax(-1) == labels) and not out.terminated.any()
    assert torch.equal(out.state.elapsed, torch.ones(5, dtype=torch.long))
    assert torch.equal(out.state.trail[:, 0], coords) and not out.state.trail[:, 1:].any()
    cells = coords.round().long()
    flat = cells[:, 0] * 28 + cells[:, 1]
    assert out.state.read.sum() == 5 and out.state.read[torch.arange(5), flat].all()
    assert torch.equal(out.state.read_values[torch.arange(5), flat], values)
    # pure: the state given is unchanged
    assert all(torch.equal(v, before[name]) for name, v in vars(state).items() if v is not None)


def test_pixel_actions_final_reward_active_rows_and_reset(setup):
    core, images, labels = setup
    state = initial_state(core, 5, 2)
    pixels = torch.tensor([0, 29, 400, 783, 100])
    active = torch.tensor([True, True, False, True, True])
    with torch.no_grad():
        one = step(state, pixels, images, core, Sampler("nearest"), labels, reward="final", active=active)
        two = step(one.state, pixels + 1, images, core, Sampler("nearest"), labels, reward="final", active=active)
    assert torch.equal(one.coords, pixel_coords(pixels))
    assert torch.equal(two.terminated, active) and torch.equal(two.reward, (active & two.correct).float())
    assert torch.equal(two.state.elapsed, 2 * active.long())
    # the inactive row kept its start
    assert not two.state.histogram[2].any() and torch.equal(two.state.logits[2], torch.zeros(NUM_CLASSES))
    fresh = reset(two.state, torch.tensor([True, False, False, False, False]))
    assert not fresh.histogram[0].any() and fresh.elapsed[0] == 0 and not fresh.trail[0].any()
    assert torch.equal(fresh.histogram[1:], two.state.histogram[1:])


def test_gradients_reach_the_action_and_the_candidates_weights(setup):
    core, images, labels = setup
    state = initial_state(core, 5, 2)
    actions = torch.tensor([[0.1, -0.3], [0.2, 0.2], [-0.4, 0.1], [0.0, 0.05], [0.3, -0.1]], requires_grad=True)
    out = step(state, actions, images, core, Sampler("bilinear"))
    out.logits.sum().backward()
    assert actions.grad is not None and float(actions.grad.abs().sum()) > 0
    # K candidates: forward exactly candidate 0's glimpse; the weights learn from the mixture
    pixels = torch.randint(0, 784, (5, 4))
    weights = torch.softmax(torch.randn(5, 4), -1).requires_grad_()
    out = step(state, Candidates(pixels, weights), images, core, Sampler("nearest"))
    taken = step(state, pixels[:, 0], images, core, Sampler("nearest"))
    torch.testing.assert_close(out.state.histogram, taken.state.histogram)
    out.logits.sum().backward()
    assert weights.grad is not None and float(weights.grad.abs().sum()) > 0
    with pytest.raises(ValueError, match="Unknown pixel estimator 'soft'"):
        step(state, Candidates(pixels, weights), images, core, Sampler("nearest"), estimator="soft")
    with pytest.raises(ValueError, match="Unknown credit 'all'"):
        step(state, pixels[:, 0], images, core, Sampler("nearest"), credit="all")
