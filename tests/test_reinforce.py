"""agents.reinforce and train/reinforce.py: the policy gradient points the right way, runs are
reproducible, the learner works on whole batches (no Python loop over episodes), checkpoints round
trip, and the training script writes its outputs."""

from __future__ import annotations

import json
import math

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from agents.checkpoint import load_agent, save_agent
from agents.reinforce import (
    GaussianAttentionPolicy,
    ReinforceLearner,
    Rollout,
    ValueBaseline,
    collect_rollout,
    make_env,
    returns_to_go,
)


def _policy(observation_size: int, seed: int = 0, **kwargs) -> GaussianAttentionPolicy:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return GaussianAttentionPolicy(observation_size, hidden=32, **kwargs)


# -- the estimator ---------------------------------------------------------------------------------


@pytest.mark.parametrize("with_baseline", [False, True])
def test_policy_gradient_moves_the_mean_toward_the_rewarded_point(with_baseline):
    """Toy bandit: one glimpse, reward = -distance of the action from a target point. A few
    REINFORCE updates must bring the (greedy) mean action closer to the target."""
    torch.manual_seed(0)
    size, n = 20, 256
    policy = _policy(size)
    baseline = ValueBaseline(size, max_glimpses=1, hidden=16) if with_baseline else None
    learner = ReinforceLearner(policy, baseline, learning_rate=0.02, baseline_lr=0.02)
    observation = torch.rand(n, size)
    target = torch.tensor([0.6, -0.5])

    def distance() -> float:
        with torch.no_grad():
            return float((policy(observation) - target).norm(dim=-1).mean())

    before = distance()
    for _ in range(30):
        action = policy.sample(observation)
        reward = -(action.clamp(-1, 1) - target).norm(dim=-1)
        learner.update(Rollout(observation[None], action[None], reward[None], torch.zeros(n, dtype=torch.bool)))
    after = distance()
    assert before > 0.7
    assert after < 0.5 * before, (before, after)


def test_single_update_gradient_sign():
    """One plain gradient step on L_pi: the mean's bias gradient points away from the target
    (descent moves it toward the target), for each coordinate separately."""
    torch.manual_seed(1)
    size, n = 20, 4096
    policy = _policy(size)
    learner = ReinforceLearner(policy, None)
    observation = torch.rand(n, size)
    target = torch.tensor([0.5, -0.5])
    action = policy.sample(observation)
    reward = -(action - target).pow(2).sum(dim=-1)
    losses = learner.losses(Rollout(observation[None], action[None], reward[None], torch.zeros(n, dtype=torch.bool)))
    losses.policy.backward()
    bias_grad = policy.attention.net[-1].bias.grad  # d L_pi / d (pre-tanh mean)
    assert bias_grad[0] < 0 and bias_grad[1] > 0, bias_grad


def test_returns_to_go_telescope_the_dense_reward():
    rewards = torch.tensor([[1.0, 0.0], [2.0, 1.0], [3.0, -1.0]])
    assert torch.equal(returns_to_go(rewards), torch.tensor([[6.0, 0.0], [5.0, 0.0], [3.0, -1.0]]))
    discounted = returns_to_go(rewards, gamma=0.5)
    assert torch.allclose(discounted[:, 0], torch.tensor([1.0 + 0.5 * 2.0 + 0.25 * 3.0, 2.0 + 0.5 * 3.0, 3.0]))


def test_policy_distribution_and_clamped_std():
    policy = _policy(20, log_std_init=math.log(0.3))
    observation = torch.rand(5, 20)
    assert torch.equal(policy(observation, 0), policy.mean(observation, 0))  # greedy = mean
    assert policy(observation).shape == (5, 2) and bool((policy(observation).abs() <= 1).all())
    assert torch.allclose(policy.std(), torch.full((2,), 0.3))
    with torch.no_grad():
        policy.log_std.fill_(10.0)
    assert torch.allclose(policy.std(), torch.ones(2))  # clamped at log_std_max = 0
    action = torch.zeros(5, 2)
    expected = torch.distributions.Normal(policy.mean(observation), 1.0).log_prob(action).sum(-1)
    assert torch.allclose(policy.log_prob(observation, action), expected)
    with pytest.raises(ValueError, match="log_std_init"):
        GaussianAttentionPolicy(20, log_std_init=1.0)


# -- the env loop ----------------------------------------------------------------------------------


def _train(core, seed: int, num_envs: int = 16, glimpses: int = 3, iterations: int = 3, step_bias: bool = True):
    """A tiny joint-mode run (policy, baseline and the env's core all learn); returns its modules."""
    torch.manual_seed(seed)
    env = make_env(num_envs, glimpses, learn_perception=True, perception=core)
    policy = GaussianAttentionPolicy(env.single_observation_space.shape[0], 32, glimpses, step_bias, glimpses)
    baseline = ValueBaseline(policy.observation_size, glimpses, 16, glimpses)
    learner = ReinforceLearner(policy, baseline)
    observation, _ = env.reset(seed=seed)
    for _ in range(iterations):
        rollout, observation = collect_rollout(env, policy, observation)
        learner.update(rollout)
    return env, policy, baseline, rollout


def _state(*modules) -> list[torch.Tensor]:
    return [t.detach().clone() for m in modules for t in m.state_dict().values()]


def test_same_seed_gives_identical_runs(make_core):
    env_a, policy_a, baseline_a, _ = _train(make_core(0), seed=3)
    env_b, policy_b, baseline_b, _ = _train(make_core(0), seed=3)
    for a, b in zip(_state(policy_a, baseline_a, env_a.core), _state(policy_b, baseline_b, env_b.core), strict=True):
        assert torch.equal(a, b)
    env_c, policy_c, _, _ = _train(make_core(0), seed=4)
    assert not all(torch.equal(a, c) for a, c in zip(_state(policy_a), _state(policy_c)))


def test_rollout_shapes_and_the_env_trains_its_core(make_core):
    core = make_core(0)
    before = _state(core)
    env, policy, _, rollout = _train(core, seed=0, num_envs=8, glimpses=4)
    assert rollout.observations.shape == (4, 8, policy.observation_size)
    assert rollout.actions.shape == (4, 8, 2) and rollout.rewards.shape == (4, 8) and rollout.correct.shape == (8,)
    assert env.core is core  # joint mode trains the core the env runs (here: the one passed in)
    assert not all(torch.equal(a, b) for a, b in zip(before, _state(core)))
    # Dense reward: each episode's return telescopes to log p_T(y) - log 0.1 <= log 10.
    assert bool(torch.isfinite(rollout.episodic_return).all())
    assert bool((rollout.episodic_return <= math.log(10.0) + 1e-5).all())


def test_rollout_correct_is_the_ended_episodes_outcome(make_core):
    """``rollout.correct`` is, per episode, whether the last prediction names the episode's label (read
    from the step that ends the batch, whose own observation and info are the next batch's first)."""
    env = make_env(64, 3, perception=make_core(0))
    policy = GaussianAttentionPolicy(env.single_observation_space.shape[0], 32, 3, True, 3)
    observation, _ = env.reset(seed=0)
    labels = env.sim.labels.clone()
    steps = []
    step = env.step
    env.step = lambda actions: steps.append(step(actions)) or steps[-1]
    rollout, _ = collect_rollout(env, policy, observation)
    last_prediction = steps[-1][4]["final_obs"][:, -10:]
    expected = last_prediction.argmax(dim=-1) == labels
    assert torch.equal(rollout.correct, expected) and bool(expected.any())


def test_collect_rollout_refuses_next_step_autoreset(make_core):
    from envs.vector_env import MnistGlimpseVectorEnv

    env = MnistGlimpseVectorEnv(num_envs=2, max_glimpses=2, perception=make_core(0), device="cpu")
    policy = GaussianAttentionPolicy(env.single_observation_space.shape[0], 8)
    observation, _ = env.reset(seed=0)
    with pytest.raises(ValueError, match="same_step"):
        collect_rollout(env, policy, observation)


class _OpCounter(TorchDispatchMode):
    """Counts every aten op dispatched (forward and backward)."""

    def __init__(self) -> None:
        super().__init__()
        self.ops: list[str] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.ops.append(str(func))
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize("step_bias", [False, True])
def test_learner_never_loops_over_the_batch(make_core, step_bias):
    """Structural check, no timing: a rollout + update dispatches exactly the same sequence of torch
    ops for 2 episodes as for 64, so nothing in the loop runs once per episode. (With 1 episode torch
    itself picks a few different view/copy kernels for size-1 dimensions, so 1 is only run.)"""
    counts = {}
    for num_envs in (1, 2, 64):
        torch.manual_seed(0)
        env = make_env(num_envs, 3, learn_perception=True, perception=make_core(0))
        policy = GaussianAttentionPolicy(env.single_observation_space.shape[0], 16, 3, step_bias, 3)
        learner = ReinforceLearner(policy, ValueBaseline(policy.observation_size, 3, 8, 3))
        observation, _ = env.reset(seed=0)
        rollout, observation = collect_rollout(env, policy, observation)  # warm-up (lazy inits)
        learner.update(rollout)
        with _OpCounter() as counter:
            rollout, observation = collect_rollout(env, policy, observation)
            stats = learner.update(rollout)
        assert rollout.actions.shape == (3, num_envs, 2) and math.isfinite(stats.policy_loss)
        counts[num_envs] = counter.ops
    assert len(counts[2]) > 50
    assert counts[2] == counts[64]


# -- checkpoints and the script --------------------------------------------------------------------


@pytest.mark.parametrize("step_bias", [False, True])
def test_checkpoint_round_trip_gives_the_same_actions(tmp_path, make_core, step_bias):
    core = make_core(0)
    policy = _policy(core.observation_size, max_glimpses=4, step_bias=step_bias, histogram_scale=4, log_std_init=-1.0)
    with torch.no_grad():
        for parameter in policy.parameters():
            parameter.add_(0.1 * torch.randn_like(parameter))  # not just the initialisation
    save_agent(tmp_path / "checkpoint.pt", "reinforce-frozen", policy, core, 4)
    loaded, loaded_core, checkpoint = load_agent(tmp_path / "checkpoint.pt")
    assert isinstance(loaded, GaussianAttentionPolicy) and checkpoint["policy"]["kind"] == "gaussian-attention"
    assert loaded.checkpoint_config() == policy.checkpoint_config()
    observation = torch.rand(32, core.observation_size) * torch.cat(
        [torch.full((core.histogram_size,), 4.0), torch.ones(10)]
    )
    for step in range(4):
        assert torch.equal(loaded(observation, step), policy(observation, step))
    assert torch.equal(loaded.std(), policy.std())
    for a, b in zip(_state(core), _state(loaded_core), strict=True):
        assert torch.equal(a, b)


@pytest.mark.parametrize("core_training", ["frozen", "joint"])
def test_train_script_smoke(tmp_path, core_training, load_script):
    script = load_script("train/reinforce.py")
    out = tmp_path / core_training
    args = script.Args(
        max_glimpses=3,
        num_envs=32,
        total_steps=3 * 32 * 4,
        learn_perception=core_training == "joint",
        eval_every=3 * 32 * 2,
        eval_images=200,
        device="cpu",
        out=str(out),
    )
    metrics = script.main(args)
    written = json.loads((out / "metrics.json").read_text())
    assert written == json.loads(json.dumps(metrics))
    for key in (
        "agent",
        "test_accuracy",
        "readout",
        "train_sampler",
        "train_seconds",
        "device",
        "seed",
        "core_training",
        "env_steps",
        "env_steps_per_second",
        "random_baseline_accuracy",
        "seconds_to_random_baseline",
        "seconds_to_80_at_25",
        "test_accuracy_sampled",
        "learning_curve",
    ):
        assert key in written, key
    assert written["agent"] == f"reinforce-{core_training}" and written["core_training"] == core_training
    assert set(written["test_accuracy"]) == {"1", "2", "3"}
    assert all(0.0 <= v <= 1.0 for v in written["test_accuracy"].values())
    assert all(0.0 <= v <= 1.0 for v in written["test_accuracy_sampled"].values())
    assert 0.0 <= written["random_baseline_accuracy"] <= 1.0
    assert written["env_steps"] == 3 * 32 * 4 and written["env_steps_per_second"] > 0
    assert written["seconds_to_80_at_25"] is None  # T = 3 < 25: never measured
    assert (out / "glimpses.png").is_file() and (out / "tb").is_dir()

    # The checkpoint holds the core the env ran: the packaged one (frozen) or its trained copy (joint).
    from envs.perception import load_pretrained

    policy, core, checkpoint = load_agent(out / "checkpoint.pt")
    packaged = load_pretrained("cpu")
    same = all(torch.equal(a, b) for a, b in zip(_state(core), _state(packaged), strict=True))
    assert same == (core_training == "frozen")

    evaluate = load_script("train/evaluate.py")
    result = evaluate.main(evaluate.Args(checkpoint=str(out / "checkpoint.pt"), device="cpu"))
    assert result["test_accuracy"] == written["test_accuracy"]


def test_pixel_policy_rewards_the_pixel_that_paid(make_core):
    """The categorical pixel policy: samples never repeat a read pixel, and one REINFORCE step raises
    the log-probability of a rewarded pixel."""
    from agents.pixel_attention import PixelAttention
    from agents.reinforce import PixelPolicy, ReinforceLearner, Rollout

    torch.manual_seed(0)
    core = make_core(1)
    policy = PixelPolicy(PixelAttention(core.observation_size, 1, hidden=16, memory="pixels"))
    n = 64
    record = {
        "summary": torch.rand(n, core.observation_size),
        "mask": torch.zeros(n, 784).index_fill_(1, torch.tensor([3, 5]), 1.0),
        "pixels": torch.zeros(n, 784),
        "step": torch.zeros(n, 1),
    }
    assert not bool(torch.isin(policy.sample(record, 0), torch.tensor([3, 5])).any())
    actions = torch.full((n,), 100)
    actions[: n // 2] = 200
    rewards = (actions == 200).float()  # pixel 200 pays, pixel 100 does not
    rollout = Rollout({k: v[None] for k, v in record.items()}, actions[None], rewards[None], rewards.bool())
    learner = ReinforceLearner(policy, None, learning_rate=1e-2)
    with torch.no_grad():
        before = policy.log_prob(record, torch.full((n,), 200), 0).mean()
    learner.update(rollout)
    with torch.no_grad():
        assert float(policy.log_prob(record, torch.full((n,), 200), 0).mean()) > float(before)
    with pytest.raises(ValueError, match="memory='pixels'"):
        PixelPolicy(PixelAttention(core.observation_size, 1))


@pytest.mark.slow
def test_the_pixel_script_evaluates_through_the_environment_and_refuses_gaussian_options(
    tmp_path, make_core, load_script
):
    script, evaluate = load_script("train/reinforce.py"), load_script("train/evaluate.py")
    core = make_core(2)
    core.save(tmp_path / "core.pt")
    common = dict(max_glimpses=3, num_envs=8, eval_every=24, eval_images=50, device="cpu", action_type="pixel")
    metrics = script.main(
        script.Args(total_steps=8 * 3 * 2, perception=str(tmp_path / "core.pt"), out=str(tmp_path / "run"), **common)
    )
    assert metrics["agent"] == "reinforce-pixel-frozen" and metrics["policy_std"] is None
    result = evaluate.main(evaluate.Args(checkpoint=str(tmp_path / "run" / "checkpoint.pt"), device="cpu"))
    assert result["test_accuracy"] == metrics["test_accuracy"]
    _, saved_core, _ = load_agent(tmp_path / "run" / "checkpoint.pt")
    assert all(torch.equal(a, b) for a, b in zip(saved_core.state_dict().values(), core.state_dict().values()))
    with pytest.raises(ValueError, match="--log-std-init is an option of the Gaussian policy"):
        script.main(script.Args(log_std_init=-1.0, out=str(tmp_path / "bad"), **common))
    assert not (tmp_path / "bad").exists()
