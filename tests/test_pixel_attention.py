"""PixelAttention: a categorical choice among the pixel centres, read exactly, trained through a
straight-through Gumbel-softmax relaxation."""

from __future__ import annotations

import pytest
import torch

from agents.baselines import FixedSequence
from agents.differentiable import DualOptimizerTrainer
from agents.pixel_attention import NUM_PIXELS, PixelAttention
from agents.rollout import run_episodes
from envs.data import load_mnist
from envs.episode import initial_state, pixel_coords, read_candidates
from envs.episode import step as episode_step
from envs.glimpse_env import MnistGlimpseEnv
from envs.perception import PerceptionCore
from envs.sampler import Sampler, action_to_pixel, pixel_to_action


@pytest.fixture
def batch():
    data = load_mnist("test")
    return data.images[:16].float() / 255.0, data.labels[:16]


def make_agent(seed: int = 0, glimpses: int = 3):
    torch.manual_seed(seed)
    core = PerceptionCore()
    policy = PixelAttention(core.observation_size, glimpses, hidden=16)
    torch.nn.init.normal_(policy.beta, std=3.0)  # a policy that prefers some pixels
    return policy, core


def test_acting_takes_the_best_pixel_centre(batch):
    policy, core = make_agent()
    observation = core.observation(core.initial_histogram(4))
    action = policy(observation, 1)
    coords = action_to_pixel(action)
    torch.testing.assert_close(coords, coords.round(), atol=1e-5, rtol=0)  # a pixel centre
    best = policy.scores(observation, 1).argmax(-1)
    torch.testing.assert_close(coords.round().long(), torch.stack([best // 28, best % 28], -1))


@pytest.mark.parametrize("mode", ["nearest", "bilinear"])
def test_training_reads_real_pixels_best_first(batch, mode):
    images, _ = batch
    policy, core = make_agent()
    observation = core.observation(core.initial_histogram(len(images)))
    torch.manual_seed(1)
    chosen = policy.train().candidate_pixels(observation, 0)
    coords, weights = pixel_coords(chosen.pixels), chosen.weights
    values = read_candidates(Sampler(mode), images, coords)
    assert coords.shape == (len(images), 16, 2) and values.shape == weights.shape == (len(images), 16)
    index = coords.long()
    assert torch.equal(coords, index.float())
    rows = torch.arange(len(images))[:, None]
    torch.testing.assert_close(
        values, images[rows, index[..., 0], index[..., 1]], atol=1e-6, rtol=0
    )  # exact up to rounding
    torch.testing.assert_close(weights.sum(-1), torch.ones(len(images)))
    assert torch.all(weights[:, 0] >= weights.max(-1).values)  # candidate 0 is the sampled choice
    policy.eval()
    chosen = policy.candidate_pixels(observation, 0)
    coords, weights = pixel_coords(chosen.pixels), chosen.weights
    assert coords.shape == (len(images), 1, 2) and torch.equal(weights, torch.ones(len(images), 1))
    torch.testing.assert_close(pixel_to_action(coords[:, 0]), policy(observation, 0))


def test_training_glimpse_is_candidate_zero_with_the_mixture_gradient(batch):
    """Forward, the rollout takes exactly candidate 0; backward, the scores get the gradient of the
    weights-mixture of every candidate's increment (here checked against that mixture directly)."""
    images, _ = batch
    policy, core = make_agent()
    policy.train()
    state = initial_state(core, len(images), 3)
    histogram, observation = state.histogram, state.observation()
    torch.manual_seed(1)
    out = episode_step(state, policy.candidate_pixels(observation, 0), images, core, Sampler("nearest"))
    new, coords, values = out.state.histogram, out.coords, out.values
    torch.manual_seed(1)
    chosen = policy.candidate_pixels(observation, 0)
    cand_coords, weights = pixel_coords(chosen.pixels), chosen.weights
    cand_values = read_candidates(Sampler("nearest"), images, cand_coords)
    assert torch.equal(coords, cand_coords[:, 0]) and torch.equal(values, cand_values[:, 0])
    assert torch.equal(new, core.observe(histogram, coords, values))
    probe = torch.randn(core.histogram_size)
    (got,) = torch.autograd.grad((new @ probe).sum(), policy.beta)
    increments = torch.stack([core.observe(histogram, cand_coords[:, k], cand_values[:, k]) for k in range(16)], 1)
    (expected,) = torch.autograd.grad(((weights.unsqueeze(-1) * increments).sum(1) @ probe).sum(), policy.beta)
    torch.testing.assert_close(got, expected)
    assert (got[0] != 0).sum() > 16  # many candidate pixels learn, not just the chosen one


def test_taken_estimator_core_learns_from_the_glimpses_taken_and_scores_as_the_mixture(batch):
    """estimator="taken" (the standard straight-through Gumbel-softmax): the same episode forward;
    the core's gradient is that of re-reading the glimpses taken, nothing from the other candidates;
    the scores' gradient at a glimpse equals the mixture estimator's (one glimpse: nothing earlier)."""
    images, labels = batch
    policy, core = make_agent(glimpses=4)
    policy.train()
    sampler = Sampler("nearest")
    episodes, core_grads, beta_grads = {}, {}, {}
    for estimator in ("mixture", "taken"):
        torch.manual_seed(1)
        episodes[estimator] = run_episodes(policy, core, sampler, images, 4, estimator)
        loss = torch.nn.functional.cross_entropy(episodes[estimator].logits.flatten(0, 1), labels.repeat(4))
        core_grads[estimator] = torch.autograd.grad(loss, list(core.parameters()), retain_graph=True)
        torch.manual_seed(1)
        one = run_episodes(policy, core, sampler, images, 1, estimator)
        (beta_grads[estimator],) = torch.autograd.grad(
            torch.nn.functional.cross_entropy(one.logits[0], labels), policy.beta
        )
    mixture, taken = episodes["mixture"], episodes["taken"]
    assert torch.equal(taken.coords, mixture.coords) and torch.equal(taken.values, mixture.values)
    torch.testing.assert_close(taken.logits, mixture.logits)
    replayed = core.replay(taken.coords.transpose(0, 1), taken.values.transpose(0, 1))
    hard = torch.nn.functional.cross_entropy(replayed.flatten(0, 1), labels.repeat(4))
    for got, expected in zip(core_grads["taken"], torch.autograd.grad(hard, list(core.parameters()))):
        torch.testing.assert_close(got, expected)
    assert any(not torch.allclose(a, b) for a, b in zip(core_grads["mixture"], core_grads["taken"]))
    torch.testing.assert_close(beta_grads["taken"], beta_grads["mixture"])
    assert (beta_grads["taken"][0] != 0).sum() > 16  # every candidate's score learns, as with the mixture
    with pytest.raises(ValueError, match="Unknown pixel estimator 'soft'; valid values are"):
        run_episodes(policy, core, sampler, images, 1, "soft")


def test_eval_rollout_matches_the_environment(batch):
    images, _ = batch
    policy, core = make_agent(glimpses=4)
    policy.eval()
    episode = run_episodes(policy, core, Sampler("bilinear"), images[:1], 4)
    env = MnistGlimpseEnv(max_glimpses=4, split="test", perception=core)
    observation, _ = env.reset(options={"index": 0})
    for step in range(4):
        action = policy(torch.as_tensor(observation)[None], step)[0].detach().numpy()
        observation, _, _, _, info = env.step(action)
        torch.testing.assert_close(
            torch.as_tensor(info["prediction"]), torch.softmax(episode.logits[step, 0], -1).detach()
        )


def test_dual_optimizers_train_it_and_readout_keeps_its_mode(batch):
    images, labels = batch
    policy, core = make_agent()
    trainer = DualOptimizerTrainer(policy, core, Sampler("bilinear"), 3, attention_target="label")
    before = policy.beta.detach().clone()
    trainer.step(images, labels)
    assert not torch.equal(policy.beta, before)
    assert policy.training
    trainer.readout_step(images, labels, Sampler("nearest"))
    assert policy.training  # eval mode only for the read-out rollout


def test_repeat_probability_and_its_penalty(batch):
    policy = PixelAttention(10, 3, hidden=8)
    observations = torch.randn(3, 4, 10)
    coords = torch.tensor([[1.0, 2.0], [1.0, 2.0], [3.0, 3.0]]).unsqueeze(1).expand(3, 4, 2)
    p = [torch.softmax(policy.scores(observations[t], t), -1) for t in range(3)]
    seen = 1 * 28 + 2
    expected = (p[1][:, seen] + p[2][:, seen] + p[2][:, seen]).mean() / 3  # glimpse 0 never repeats
    torch.testing.assert_close(policy.repeat_probability(observations, coords), expected)
    # the penalty enters the attention loss only, and lowers the score of a pixel already read
    images, labels = batch
    agent, core = make_agent()
    with torch.no_grad():
        agent.beta[:, 100] = 20.0  # one pixel first at every step: 2 repeats per episode
    plain = DualOptimizerTrainer(agent, core, Sampler("nearest"), 3, attention_target="label")
    penalised = DualOptimizerTrainer(agent, core, Sampler("nearest"), 3, attention_target="label", repeat_penalty=1.0)
    torch.manual_seed(0)
    perception_a, attention_a, _ = plain.losses(images, labels)
    torch.manual_seed(0)
    perception_b, attention_b, _ = penalised.losses(images, labels)
    assert torch.equal(perception_a, perception_b) and attention_b > attention_a + 0.5
    (grad,) = torch.autograd.grad(attention_b - attention_a, agent.beta)
    assert grad[1:, 100].gt(0).all() and grad[0, 100] == 0  # descent lowers it where it would repeat


def test_errors():
    with pytest.raises(ValueError, match="temperature must be > 0"):
        PixelAttention(10, 3, temperature=0.0)
    with pytest.raises(ValueError, match="glimpses T >= 1"):
        PixelAttention(10, 0)
    with pytest.raises(ValueError, match="candidates >= 1"):
        PixelAttention(10, 2, candidates=0)
    policy = PixelAttention(10, 2)
    with pytest.raises(ValueError, match="observations of size 10"):
        policy(torch.zeros(1, 11), 0)
    with pytest.raises(IndexError, match="step 2 is past them"):
        policy(torch.zeros(1, 10), 2)
    with pytest.raises(ValueError, match="repeat_penalty must be >= 0 and needs a PixelAttention"):
        DualOptimizerTrainer(FixedSequence(2), PerceptionCore(), Sampler(), 2, repeat_penalty=1.0)
    with pytest.raises(ValueError, match="pixel_estimator='taken' is for a policy that chooses pixels"):
        DualOptimizerTrainer(FixedSequence(2), PerceptionCore(), Sampler(), 2, pixel_estimator="taken")
    with pytest.raises(ValueError, match="Unknown pixel_estimator 'soft'"):
        DualOptimizerTrainer(policy, PerceptionCore(), Sampler(), 2, pixel_estimator="soft")
    assert policy.beta.shape == (2, NUM_PIXELS)


@pytest.mark.parametrize("mode", ["train", "eval"])
def test_memory_sees_the_masked_image_and_never_rereads(batch, mode):
    images, labels = batch
    torch.manual_seed(0)
    core = PerceptionCore()
    policy = PixelAttention(core.observation_size, 30, hidden=16, memory="pixels").train(mode == "train")
    torch.nn.init.constant_(policy.beta[:, 100], 50.0)  # pixel 100 first at every step, unless masked
    episode = run_episodes(policy, core, Sampler("nearest"), images, 30)
    flat = episode.coords.round().long()
    flat = (flat[..., 0] * 28 + flat[..., 1]).T  # (B, T)
    assert all(len(set(row.tolist())) == 30 for row in flat)  # 30 distinct pixels per image
    assert (flat[:, 0] == 100).all()
    # the record the state carried before the last glimpse: the 29 pixels read before it, and their grey levels
    mask, seen = episode.records[0][-1], episode.records[1][-1]
    expected = torch.zeros_like(mask).scatter(1, flat[:, :29], 1.0)
    torch.testing.assert_close(mask, expected)
    torch.testing.assert_close(seen, images.flatten(1) * expected)  # the grey levels read, where read
    # scores see the record they are given: the pixels in it are never chosen, others can be
    observation = core.observation(core.initial_histogram(len(images)))
    record = {"summary": observation, "mask": episode.records[0][2], "pixels": episode.records[1][2]}
    scores = policy.scores(record, 2)
    assert (scores.gather(1, flat[:, :2]) == torch.finfo(scores.dtype).min).all()
    assert (scores.argmax(-1) != 100).all()  # the favourite, read at step 0, is out
    # without the record it cannot score
    with pytest.raises(ValueError, match=r"scores from the record of the episode's reads: pass the record observation"):
        policy.scores(observation, 1)
    # it trains through the dual optimizers, and refuses what it cannot do
    trainer = DualOptimizerTrainer(policy.train(), core, Sampler("bilinear"), 30, attention_target="label")
    before = policy.net[0].weight.detach().clone()
    trainer.step(images, labels)
    assert not torch.equal(policy.net[0].weight, before)
    with pytest.raises(
        RuntimeError, match="needs the grey levels it read: make the environment with obs_type='record'"
    ):
        policy(core.observation(core.initial_histogram(1)), 0)  # the default observation has no record
    with pytest.raises(ValueError, match="never reads a pixel twice"):
        DualOptimizerTrainer(policy, core, Sampler(), 30, repeat_penalty=1.0)
    with pytest.raises(ValueError, match="Unknown PixelAttention memory 'mask'"):
        PixelAttention(10, 2, memory="mask")


def test_memory_checkpoint_round_trip(tmp_path, batch):
    from agents.checkpoint import load_agent, save_agent

    images, _ = batch
    torch.manual_seed(0)
    core = PerceptionCore()
    policy = PixelAttention(core.observation_size, 5, hidden=16, memory="pixels").eval()
    save_agent(tmp_path / "checkpoint.pt", "differentiable-pixel", policy, core, 5)
    loaded, loaded_core, _ = load_agent(tmp_path / "checkpoint.pt")
    assert loaded.memory == "pixels"
    a = run_episodes(policy, core, Sampler("nearest"), images, 5)
    b = run_episodes(loaded, loaded_core, Sampler("nearest"), images, 5)
    torch.testing.assert_close(a.logits, b.logits)
    torch.testing.assert_close(a.coords, b.coords)
