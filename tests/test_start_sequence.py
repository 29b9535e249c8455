"""Where the per-glimpse offsets of the continuous policies start: spread over the digit, or uniform."""

from __future__ import annotations

import pytest
import torch
from stable_baselines3 import PPO

from agents.attention import AttentionNetwork
from agents.baselines import DIGIT_BOX, initial_sequence, spread_sequence
from agents.ppo import GlimpseActorCriticPolicy, PolicyConfig, SB3GlimpsePolicy, VecStepFeature
from agents.reinforce import GaussianAttentionPolicy
from envs.sb3 import MnistGlimpseSB3VecEnv


def test_spread_sequence_is_the_halton_sequence_on_the_digit_box():
    points = spread_sequence(25)
    assert points.shape == (25, 2)
    # Halton bases 2 and 3 from index 1: 1/2, 1/4, 3/4, ... and 1/3, 2/3, 1/9, ...
    unit = (points / DIGIT_BOX + 1.0) / 2.0
    assert torch.allclose(unit[:3], torch.tensor([[0.5, 1 / 3], [0.25, 2 / 3], [0.75, 1 / 9]]))
    assert points.abs().max() < DIGIT_BOX
    assert torch.equal(points, spread_sequence(25))  # no randomness
    assert len({tuple(p) for p in points.tolist()}) == 25


def test_prefixes_of_the_spread_sequence_neither_cluster_nor_leave_gaps_as_uniform_draws_do():
    """Against 200 draws of uniform glimpses on the same box: the closest two of the first t points
    are farther apart than the draws' median, and (from 5 points on) the largest unread gap, the
    farthest box point from them, is smaller."""
    axis = torch.linspace(-DIGIT_BOX, DIGIT_BOX, 41)
    grid = torch.stack(torch.meshgrid(axis, axis, indexing="ij"), -1).reshape(-1, 2)
    spread = spread_sequence(25)
    draws = (torch.rand(200, 25, 2, generator=torch.Generator().manual_seed(0)) * 2 - 1) * DIGIT_BOX
    for t in range(3, 26):
        closest = torch.stack([torch.pdist(draw[:t]).min() for draw in draws])
        assert torch.pdist(spread[:t]).min() > closest.median()
        if t >= 5:
            gaps = torch.cdist(grid.expand(200, -1, -1), draws[:, :t]).min(dim=2).values.max(dim=1).values
            assert torch.cdist(grid, spread[:t]).min(dim=1).values.max() < gaps.median()


def test_initial_sequence_refuses_unknown_names_and_bad_sizes():
    with pytest.raises(ValueError, match=r"valid values are \['spread', 'uniform'\]"):
        initial_sequence(5, "grid")
    with pytest.raises(ValueError, match="count >= 1"):
        spread_sequence(0)


def test_uniform_start_draws_as_before_and_spread_start_draws_nothing():
    torch.manual_seed(3)
    expected = torch.rand(6, 2) * 2.0 - 1.0
    torch.manual_seed(3)
    uniform = AttentionNetwork(20, 8, 6, step_bias=True)
    assert torch.equal(uniform.theta.detach(), expected)
    state = torch.random.get_rng_state()
    spread = AttentionNetwork(20, 8, 6, step_bias=True, step_bias_init="spread")
    torch.manual_seed(3)
    torch.rand(6, 2)
    assert torch.allclose(torch.tanh(spread.theta.detach()), spread_sequence(6), atol=1e-6)
    assert not torch.equal(state, torch.random.get_rng_state())  # the layers' own initialisation still draws


def test_spread_start_is_the_policies_first_greedy_sequence():
    policy = GaussianAttentionPolicy(20, 8, 6, step_bias=True, step_bias_init="spread")
    with torch.no_grad():
        policy.attention.net[-1].weight.zero_()
        means = torch.stack([policy.mean(torch.rand(3, 20), t) for t in range(6)])
    assert torch.allclose(means, spread_sequence(6)[:, None].expand_as(means), atol=1e-6)


def test_ppo_offsets_start_spread_and_the_config_checks_the_name():
    env = VecStepFeature(MnistGlimpseSB3VecEnv(4, max_glimpses=3, split="test", device="cpu"), 3)
    config = PolicyConfig.for_space(
        env.observation_space, step_feature=True, glimpses=3, step_offsets=True, step_offsets_init="spread"
    )
    model = PPO(
        GlimpseActorCriticPolicy, env, n_steps=3, batch_size=12, policy_kwargs=config.policy_kwargs(), device="cpu"
    )
    assert torch.equal(model.policy.action_net.weight[:, -3:].detach(), spread_sequence(3).T)
    with torch.no_grad():
        model.policy.action_net.weight[:, :-3] = 0.0
        model.policy.action_net.bias.zero_()
        policy = SB3GlimpsePolicy(model.policy, config)
        actions = torch.stack([policy(torch.rand(2, env.observation_space.shape[0] - 1), t) for t in range(3)])
    assert torch.allclose(actions, spread_sequence(3)[:, None].expand_as(actions), atol=1e-6)
    with pytest.raises(ValueError, match="Unknown step_offsets_init 'grid'"):
        PolicyConfig.for_space(
            env.observation_space, step_feature=True, glimpses=3, step_offsets=True, step_offsets_init="grid"
        )
