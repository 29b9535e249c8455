"""train/ppo.py and agents.ppo: a tiny PPO run writes the shared outputs, its checkpoint reloads with
train/evaluate.py to the same accuracy, and the evaluation path acts exactly as the environment."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from stable_baselines3 import PPO

from agents.checkpoint import load_agent
from agents.ppo import SB3GlimpsePolicy, VecStepFeature
from agents.rollout import run_episodes
from envs.data import load_mnist
from envs.sampler import Sampler
from envs.sb3 import MnistGlimpseSB3VecEnv


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory, load_script):
    ppo = load_script("train/ppo.py")
    out = tmp_path_factory.mktemp("ppo")
    args = ppo.Args(
        max_glimpses=3,
        num_envs=16,
        total_steps=16 * 3 * 3,
        n_epochs=2,
        learn_perception=True,
        eval_every=48,
        eval_images=200,
        progress_bar=False,
        device="cpu",
        torch_threads=1,
        out=str(out),
    )
    return args, ppo.main(args), out


def test_outputs_and_metrics_schema(tiny_run):
    args, metrics, out = tiny_run
    for name in ("model.zip", "checkpoint.pt", "metrics.json", "glimpses.png"):
        assert (out / name).is_file(), name
    assert json.loads((out / "metrics.json").read_text()) == metrics
    assert {"agent", "test_accuracy", "readout", "train_sampler", "train_seconds", "device", "seed"} <= set(metrics)
    assert metrics["agent"] == "ppo-joint" and metrics["core_training"] == "joint" and metrics["readout"] == "nearest"
    assert set(metrics["test_accuracy"]) == {"1", "2", "3"}
    assert all(0.0 <= acc <= 1.0 for acc in metrics["test_accuracy"].values())
    assert metrics["env_steps"] == args.total_steps and metrics["env_steps_per_second"] > 0
    assert metrics["seconds_to_80_percent"] is None or metrics["seconds_to_80_percent"] >= 0
    assert metrics["seconds_to_80_percent_glimpses"] == 3
    curve = metrics["eval_subset_curve"]
    assert [point["env_steps"] for point in curve] == [16, 64, 112, 144]  # first step, every 48, and the end
    assert all(0.0 <= point["accuracy"] <= 1.0 for point in curve)


def test_evaluate_reproduces_the_accuracy(tiny_run, load_script):
    _, metrics, out = tiny_run
    evaluate = load_script("train/evaluate.py")
    result = evaluate.main(evaluate.Args(checkpoint=str(out / "checkpoint.pt"), device="cpu"))
    assert result["agent"] == "ppo-joint"
    assert result["test_accuracy"] == metrics["test_accuracy"]


def test_checkpoint_and_zip_act_alike(tiny_run):
    """The agent checkpoint (policy rebuilt from config + state dict) and SB3's zip give the same
    deterministic actions; joint training changed the saved core."""
    args, _, out = tiny_run
    policy, core, checkpoint = load_agent(out / "checkpoint.pt")
    assert isinstance(policy, SB3GlimpsePolicy) and checkpoint["policy"]["kind"] == "sb3-ppo"
    assert checkpoint["sb3_model"] == "model.zip" and checkpoint["glimpses"] == 3
    model = PPO.load(out / "model.zip", device="cpu")
    observations = torch.rand(32, core.observation_size)
    for step in range(3):
        with torch.no_grad():
            ours = policy(observations, step)
        theirs, _ = model.predict(
            np.concatenate([observations.numpy(), np.full((32, 1), step / 3, np.float32)], 1), deterministic=True
        )
        np.testing.assert_allclose(ours.numpy(), theirs, atol=1e-6)
        assert ours.abs().max() <= 1.0
    from envs.perception import load_pretrained

    packaged = load_pretrained()
    assert any(not torch.equal(a, b) for a, b in zip(core.state_dict().values(), packaged.state_dict().values()))


def test_evaluation_path_matches_the_environment(tiny_run):
    """run_episodes with the wrapped policy (how accuracies are measured) and the SB3 env driven by
    model.predict take the same glimpses and reach the same predictions on the same test images."""
    args, _, out = tiny_run
    policy, core, _ = load_agent(out / "checkpoint.pt")
    model = PPO.load(out / "model.zip", device="cpu")
    n, glimpses = 8, 3
    env = VecStepFeature(
        MnistGlimpseSB3VecEnv(n, max_glimpses=glimpses, split="test", sampler="nearest", perception=core, device="cpu"),
        glimpses,
    )
    env.set_options([{"index": k} for k in range(n)])
    obs = env.reset()
    for _ in range(glimpses):
        actions, _ = model.predict(obs, deterministic=True)
        obs, rewards, dones, infos = env.step(actions)
    assert dones.all()
    data = load_mnist("test")
    with torch.no_grad():
        episode = run_episodes(policy, core, Sampler("nearest"), data.images[:n].float() / 255.0, glimpses)
    final = np.stack([info["terminal_observation"][: core.observation_size] for info in infos])
    np.testing.assert_allclose(
        final[:, core.histogram_size :], torch.softmax(episode.logits[-1], -1).numpy(), atol=1e-5
    )
    assert [info["correct"] for info in infos] == (episode.logits[-1].argmax(-1) == data.labels[:n]).tolist()
    assert all(math.isfinite(info["episode"]["r"]) for info in infos)


def test_step_feature_wrapper(core):
    n, glimpses = 2, 3
    env = VecStepFeature(
        MnistGlimpseSB3VecEnv(n, max_glimpses=glimpses, split="test", perception=core, device="cpu"), glimpses
    )
    assert env.observation_space.shape == (core.observation_size + 1,) and env.observation_space.high[-1] == 1.0
    obs = env.reset()
    assert (obs[:, -1] == 0.0).all()
    for t in range(1, glimpses + 1):
        obs, _, dones, infos = env.step(np.zeros((n, 2), np.float32))
        assert (obs[:, -1] == (t % glimpses) / glimpses).all()
    assert dones.all() and all(info["terminal_observation"][-1] == 1.0 for info in infos)
    assert all(env.observation_space.contains(info["terminal_observation"]) for info in infos)


@pytest.fixture
def fixed_checkpoint(tmp_path, make_core):
    from agents.baselines import FixedSequence
    from agents.checkpoint import save_agent

    sequence = FixedSequence(3, generator=torch.Generator().manual_seed(5))
    path = tmp_path / "fixed" / "checkpoint.pt"
    save_agent(path, "fixed-sequence", sequence, make_core(7), 3)
    return path, sequence.locations()


def test_warm_start_begins_as_the_fixed_sequence(fixed_checkpoint):
    from agents.ppo import GlimpseActorCriticPolicy, PolicyConfig, load_fixed_sequence

    path, locations = fixed_checkpoint
    loaded, core = load_fixed_sequence(path, 3)
    assert torch.equal(loaded, locations)
    env = VecStepFeature(MnistGlimpseSB3VecEnv(4, max_glimpses=3, split="test", perception=core, device="cpu"), 3)
    config = PolicyConfig.for_space(env.observation_space, step_feature=True, glimpses=3, step_offsets=True)
    model = PPO(
        GlimpseActorCriticPolicy,
        env,
        n_steps=3,
        batch_size=12,
        policy_kwargs=config.policy_kwargs(),
        device="cpu",
        seed=0,
    )
    model.policy.start_from_sequence(loaded)
    policy = SB3GlimpsePolicy(model.policy, config)
    observations = torch.rand(16, core.observation_size)
    with torch.no_grad():
        near = torch.stack([policy(observations, t) for t in range(3)])
        # SB3's action head starts with weights of gain 0.01 on the hidden features: a small adaptive part
        assert (near - locations[:, None]).abs().max() < 0.1
        model.policy.action_net.weight[:, :-3] = 0.0
        exact = torch.stack([policy(observations, t) for t in range(3)])
    assert torch.allclose(exact, locations[:, None].expand_as(exact), atol=1e-6)
    with pytest.raises(ValueError, match=r"expected shape \(3, 2\)"):
        model.policy.start_from_sequence(torch.zeros(5, 2))


def test_init_from_runs_the_sequence_core_and_checks_the_checkpoint(fixed_checkpoint, tmp_path, load_script):
    path, _ = fixed_checkpoint
    ppo = load_script("train/ppo.py")
    common = dict(
        max_glimpses=3,
        num_envs=8,
        total_steps=8 * 3,
        n_epochs=1,
        eval_images=50,
        progress_bar=False,
        device="cpu",
        torch_threads=1,
    )
    ppo.main(ppo.Args(learn_perception=False, init_from=str(path), out=str(tmp_path / "warm"), **common))
    _, saved_core, checkpoint = load_agent(tmp_path / "warm" / "checkpoint.pt")
    _, fixed_core, _ = load_agent(path)
    assert checkpoint["args"]["init_from"] == str(path)
    assert all(torch.equal(a, b) for a, b in zip(saved_core.state_dict().values(), fixed_core.state_dict().values()))

    with pytest.raises(ValueError, match="train it with --max-glimpses 4"):
        ppo.main(ppo.Args(**{**common, "max_glimpses": 4}, init_from=str(path), out=str(tmp_path / "bad")))
    ppo_checkpoint = tmp_path / "warm" / "checkpoint.pt"
    with pytest.raises(ValueError, match="needs a fixed-sequence checkpoint"):
        ppo.main(ppo.Args(init_from=str(ppo_checkpoint), out=str(tmp_path / "bad2"), **common))


@pytest.fixture(scope="module")
def pixel_checkpoint(tmp_path_factory):
    """A small untrained pixel agent with a record, saved as train/differentiable.py saves one."""
    from agents.checkpoint import save_agent
    from agents.pixel_attention import PixelAttention
    from envs.perception import PerceptionConfig, PerceptionCore

    torch.manual_seed(3)
    core = PerceptionCore(PerceptionConfig(channels=4, n_bins=2, hidden=8))
    attention = PixelAttention(core.observation_size, 3, hidden=16, memory="pixels")
    with torch.no_grad():
        attention.net[-1].weight.normal_()  # scores far from uniform, so a changed actor would show
    path = tmp_path_factory.mktemp("pixel") / "checkpoint.pt"
    save_agent(path, "differentiable-pixel", attention, core, 3)
    return path


@pytest.mark.slow
def test_pixel_actions_run_maskable_ppo_with_the_pixel_agent_as_actor(pixel_checkpoint, tmp_path, load_script):
    """--action-type pixel: MaskablePPO on the record; --init-from starts its actor as the pixel agent and
    the env on its core; the saved agent is that actor, evaluated through the environment, and
    train/evaluate.py (run_episodes) gives the same figures."""
    from sb3_contrib import MaskablePPO

    from agents.pixel_attention import PixelAttention
    from agents.ppo import PixelActorCriticPolicy, load_pixel_agent

    ppo, evaluate = load_script("train/ppo.py"), load_script("train/evaluate.py")
    common = dict(max_glimpses=3, num_envs=8, n_epochs=1, eval_images=50, progress_bar=False, device="cpu")
    common.update(torch_threads=1, action_type="pixel")
    attention, core = load_pixel_agent(pixel_checkpoint, 3)
    # the actor starts as the pixel agent: same scores on a record observation
    env = MnistGlimpseSB3VecEnv(
        4, max_glimpses=3, split="test", perception=core, obs_type="record", action_type="pixel"
    )
    model = MaskablePPO(
        PixelActorCriticPolicy,
        env,
        n_steps=3,
        batch_size=12,
        policy_kwargs=dict(attention=attention.checkpoint_config()),
    )
    model.policy.start_from(attention)
    observation = {key: torch.as_tensor(value) for key, value in env.reset().items()}
    with torch.no_grad():
        features = model.policy.extract_features(observation)
        torch.testing.assert_close(model.policy.mlp_extractor.forward_actor(features), attention.scores(observation, 0))
    distribution = model.policy.get_distribution(observation, action_masks=env.action_masks())
    assert distribution.distribution.probs.shape == (4, 784)

    # one rollout: the first probe (before any update) is the pixel agent's; the env runs its core; the
    # saved agent is the actor, a PixelAttention
    metrics = ppo.main(ppo.Args(total_steps=1, init_from=str(pixel_checkpoint), out=str(tmp_path / "warm"), **common))
    probe = ppo.SubsetEvalCallback(attention, core, 3, 3, size=50, seed=0)
    before = float(ppo.subset_accuracy(attention, core, probe.images, probe.labels, 3)[-1])
    assert metrics["eval_subset_curve"][0] == {"env_steps": 8, "seconds": metrics["eval_subset_curve"][0]["seconds"],
                                               "accuracy": round(before, 4)}  # fmt: skip
    saved, saved_core, _ = load_agent(tmp_path / "warm" / "checkpoint.pt")
    assert isinstance(saved, PixelAttention) and metrics["agent"] == "maskable-ppo-pixel-frozen"
    assert all(torch.equal(a, b) for a, b in zip(saved_core.state_dict().values(), core.state_dict().values()))
    result = evaluate.main(evaluate.Args(checkpoint=str(tmp_path / "warm" / "checkpoint.pt"), device="cpu"))
    assert result["test_accuracy"] == metrics["test_accuracy"]

    # from scratch, on a given core, trained a little
    core.save(tmp_path / "core.pt")
    metrics = ppo.main(
        ppo.Args(total_steps=8 * 3 * 2, perception=str(tmp_path / "core.pt"), out=str(tmp_path / "fresh"), **common)
    )
    assert set(metrics["test_accuracy"]) == {"1", "2", "3"}
    _, fresh_core, _ = load_agent(tmp_path / "fresh" / "checkpoint.pt")
    assert all(torch.equal(a, b) for a, b in zip(fresh_core.state_dict().values(), core.state_dict().values()))
    with pytest.raises(ValueError, match="--init-from brings its agent's core; drop --perception"):
        ppo.main(ppo.Args(perception="x.pt", init_from=str(pixel_checkpoint), out=str(tmp_path / "bad"), **common))

    with pytest.raises(ValueError, match="--log-std-init is an option of the Gaussian policy"):
        ppo.main(ppo.Args(log_std_init=-1.0, out=str(tmp_path / "bad"), **common))
    with pytest.raises(ValueError, match="pass --max-glimpses 3"):
        ppo.main(ppo.Args(**{**common, "max_glimpses": 4}, init_from=str(pixel_checkpoint), out=str(tmp_path / "bad")))
    with pytest.raises(ValueError, match="needs a pixel agent with a record"):
        ppo.main(ppo.Args(init_from=str(_save_fixed(tmp_path)), out=str(tmp_path / "bad"), **common))
    assert not (tmp_path / "bad").exists()


def _save_fixed(tmp_path: Path) -> Path:
    from agents.baselines import FixedSequence
    from agents.checkpoint import save_agent
    from envs.perception import PerceptionConfig, PerceptionCore

    path = tmp_path / "fixed" / "checkpoint.pt"
    save_agent(path, "fixed-sequence", FixedSequence(3), PerceptionCore(PerceptionConfig(4, 2, 8)), 3)
    return path
