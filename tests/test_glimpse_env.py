"""envs.glimpse_env: MnistGlimpseEnv follows the Gymnasium API and its documented semantics."""

from __future__ import annotations

import math
import warnings

import gymnasium
import numpy as np
import pytest
import torch
from gymnasium.utils.env_checker import check_env as gym_check_env
from stable_baselines3.common.env_checker import check_env as sb3_check_env

import envs
from envs.glimpse_env import MnistGlimpseEnv
from envs.perception import load_pretrained, perception_loss
from envs.sampler import Sampler, pixel_to_action
from envs.simulator import INFO_KEYS

gymnasium.register_envs(envs)


@pytest.fixture
def make_env(core):
    """``make_env(**kwargs)``: a test-split env on the CPU, 3 glimpses, running the seeded ``core``."""

    def make(**kwargs) -> MnistGlimpseEnv:
        settings = dict(split="test", max_glimpses=3, perception=core, device="cpu")
        settings.update(kwargs)
        return MnistGlimpseEnv(**settings)

    return make


def pixel_action(i: float, j: float) -> np.ndarray:
    """The action that glimpses pixel (i, j)."""
    return pixel_to_action(torch.tensor([i, j], dtype=torch.float64)).numpy().astype(np.float32)


def random_actions(count: int, seed: int, scale: float = 1.0) -> np.ndarray:
    return (np.random.default_rng(seed).uniform(-1, 1, size=(count, 2)) * scale).astype(np.float32)


def run_episode(env, actions, **reset_kwargs):
    observation, reset_info = env.reset(**reset_kwargs)
    observations, rewards, infos = [observation], [], []
    for action in actions:
        observation, reward, terminated, truncated, info = env.step(action)
        observations.append(observation)
        rewards.append(reward)
        infos.append(info)
        assert truncated is False
        if terminated:
            break
    return reset_info, observations, rewards, infos


def _check_env_warns_at_most_of_the_dummy_display(env: gymnasium.Env) -> None:
    """Gymnasium's checker passes with no warning, except, on a machine without a display, the notice
    that its ``render_mode="human"`` env draws on SDL's dummy driver."""
    from envs.glimpse_env import _no_display

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        gym_check_env(env.unwrapped, skip_render_check=False)
    messages = [str(warning.message) for warning in caught]
    headless = _no_display() and "human" in env.unwrapped.metadata["render_modes"]
    assert len(messages) == int(headless), messages
    assert all("SDL's dummy video driver" in message for message in messages)


def test_gymnasium_check_env(core):
    env = gymnasium.make("MnistGlimpse-v0", split="test", max_glimpses=4, perception=core, render_mode="rgb_array")
    _check_env_warns_at_most_of_the_dummy_display(env)


def test_gymnasium_check_env_default_arguments():
    """The default configuration (packaged core, train split, 25 glimpses) passes too."""
    env = gymnasium.make("MnistGlimpse-v0")
    _check_env_warns_at_most_of_the_dummy_display(env)
    assert env.unwrapped.max_glimpses == 25 and len(env.unwrapped.sim.data) == 60_000


def test_stable_baselines3_check_env(make_env):
    env = make_env(max_glimpses=5)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        sb3_check_env(env, warn=True)


def test_spaces(make_env, core):
    env = make_env(max_glimpses=7)
    assert env.action_space == gymnasium.spaces.Box(-1.0, 1.0, shape=(2,), dtype=np.float32)
    space = env.observation_space
    assert space.shape == (core.histogram_size + 10,) and space.dtype == np.float32
    assert np.all(space.low == 0.0)
    assert np.all(space.high[: core.histogram_size] == 7.0)
    assert np.all(space.high[core.histogram_size :] == 1.0)


def test_first_observation_is_empty_histogram_and_uniform_prediction(make_env, core):
    env = make_env()
    observation, info = env.reset(seed=0)
    assert observation.dtype == np.float32 and observation.shape == (core.observation_size,)
    assert np.all(observation[: core.histogram_size] == 0.0)
    np.testing.assert_array_equal(observation[core.histogram_size :], np.full(10, 0.1, dtype=np.float32))
    assert isinstance(info["index"], np.int64) and 0 <= info["index"] < 10_000
    # the keys of every step, with placeholders where nothing is known yet (no glimpse, no label)
    assert list(info) == list(INFO_KEYS)
    assert info["glimpse"].tolist() == [-1.0, -1.0] and info["value"] == -1.0 and info["label"] == -1
    assert info["correct"].dtype == np.bool_ and info["correct"].shape == () and not info["correct"]
    np.testing.assert_array_equal(info["prediction"], np.full(10, 0.1, dtype=np.float32))


def test_observation_is_what_the_core_computes(make_env, core, test_split):
    env = make_env(max_glimpses=4)
    _, info = env.reset(seed=3)
    image = test_split.images[info["index"]].float()[None] / 255.0
    histogram = core.initial_histogram(1)
    for action in random_actions(4, 4):
        observation, _, _, _, step_info = env.step(action)
        coords = (torch.as_tensor(action[None]) + 1.0) * 13.5
        values = Sampler("bilinear")(image, coords)
        histogram = core.observe(histogram, coords, values)
        logits = core(histogram)
        np.testing.assert_allclose(
            observation, core.observation(histogram, logits)[0].detach().numpy(), rtol=1e-6, atol=1e-6
        )
        np.testing.assert_allclose(step_info["value"], float(values), rtol=0, atol=1e-6)
        np.testing.assert_allclose(step_info["glimpse"], coords[0].numpy(), rtol=0, atol=1e-5)
        assert env.observation_space.contains(observation)


def test_same_seed_and_actions_give_identical_trajectories(make_env):
    first, second = make_env(max_glimpses=4), make_env(max_glimpses=4)
    actions = random_actions(4, 5)
    for episode in range(3):
        seed = {"seed": 123} if episode == 0 else {}
        a = run_episode(first, actions, **seed)
        b = run_episode(second, actions, **seed)
        assert a[0].keys() == b[0].keys() and a[0]["index"] == b[0]["index"]  # reset info (image index)
        for obs_a, obs_b in zip(a[1], b[1], strict=True):
            np.testing.assert_array_equal(obs_a, obs_b)
        assert a[2] == b[2]
        for info_a, info_b in zip(a[3], b[3], strict=True):
            assert info_a.keys() == info_b.keys()
            for key in info_a:
                np.testing.assert_array_equal(info_a[key], info_b[key])


def test_reseeding_replays_the_image_sequence_and_seeds_differ(make_env):
    env = make_env(max_glimpses=1)
    action = np.zeros(2, dtype=np.float32)

    def indices(seed, count=5):
        found = [env.reset(seed=seed)[1]["index"]]
        for _ in range(count - 1):
            env.step(action)
            found.append(env.reset()[1]["index"])
        return found

    first = indices(42)
    assert indices(42) == first
    assert len(set(first)) == 5
    assert indices(43) != first


def test_dense_rewards_sum_to_log_likelihood_gain(make_env):
    env = make_env(max_glimpses=6)
    for seed in range(4):
        _, _, rewards, infos = run_episode(env, random_actions(6, 10 + seed), seed=seed)
        assert len(rewards) == 6
        label = infos[-1]["label"]
        assert isinstance(label, np.int64) and 0 <= label <= 9
        total = math.log(float(infos[-1]["prediction"][label])) - math.log(0.1)
        assert sum(rewards) == pytest.approx(total, abs=2e-5)
        # and each reward is the gain of that glimpse (p_0 = 0.1)
        previous = math.log(0.1)
        for reward, info in zip(rewards, infos, strict=True):
            current = math.log(float(info["prediction"][label]))
            assert reward == pytest.approx(current - previous, abs=1e-5)
            previous = current
        assert infos[-1]["correct"] == (int(np.argmax(infos[-1]["prediction"])) == label)


def test_final_reward_is_one_at_the_end_iff_correct(make_env, test_split):
    env = make_env(max_glimpses=4, reward="final")
    image = test_split.images[0].numpy()
    actions = random_actions(4, 20)
    # the prediction does not depend on the label: find it, then make it right and wrong
    _, _, _, infos = run_episode(env, actions, options={"image": image, "label": 0})
    predicted = int(np.argmax(infos[-1]["prediction"]))
    for label, expected in [(predicted, 1.0), ((predicted + 1) % 10, 0.0), ((predicted + 5) % 10, 0.0)]:
        _, _, rewards, infos = run_episode(env, actions, options={"image": image, "label": label})
        assert rewards == [0.0, 0.0, 0.0, expected]
        assert bool(infos[-1]["correct"]) is (expected == 1.0)
        assert infos[-1]["label"] == label


def test_final_reward_on_dataset_images(make_env):
    env = make_env(max_glimpses=2, reward="final")
    for seed in range(6):
        _, _, rewards, infos = run_episode(env, random_actions(2, seed), seed=seed)
        assert rewards[0] == 0.0
        correct = bool(int(np.argmax(infos[-1]["prediction"])) == infos[-1]["label"])
        assert rewards[-1] == float(correct) and bool(infos[-1]["correct"]) is correct


@pytest.mark.parametrize("max_glimpses", [1, 2, 5])
def test_terminates_exactly_after_max_glimpses(make_env, max_glimpses):
    env = make_env(max_glimpses=max_glimpses)
    env.reset(seed=0)
    for step in range(1, max_glimpses + 1):
        _, _, terminated, truncated, info = env.step(np.zeros(2, dtype=np.float32))
        assert terminated is (step == max_glimpses)
        assert truncated is False
        assert list(info) == list(INFO_KEYS)  # the same keys at every step
        assert bool(info["label"] >= 0) is terminated  # -1 until the episode ends
        assert info["correct"] == (terminated and int(np.argmax(info["prediction"])) == info["label"])
    with pytest.raises(RuntimeError, match="reset"):
        env.step(np.zeros(2, dtype=np.float32))
    with pytest.raises(RuntimeError):  # still refused
        env.step(np.zeros(2, dtype=np.float32))
    env.reset()
    _, _, terminated, _, _ = env.step(np.zeros(2, dtype=np.float32))
    assert terminated is (max_glimpses == 1)


@pytest.mark.parametrize(
    "action",
    [
        np.zeros(3, dtype=np.float32),
        np.zeros((1, 2), dtype=np.float32),
        np.zeros((2, 1), dtype=np.float32),
        np.float32(0.0),
        [0.0],
    ],
    ids=["3", "1x2", "2x1", "scalar", "list1"],
)
def test_wrong_action_shape_raises(make_env, action):
    env = make_env()
    env.reset(seed=0)
    with pytest.raises(ValueError, match="shape"):
        env.step(action)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_actions_raise_and_leave_episode_intact(make_env, bad):
    env = make_env(max_glimpses=2)
    reference = make_env(max_glimpses=2)
    env.reset(seed=1)
    reference.reset(seed=1)
    for action in (np.array([bad, 0.0], dtype=np.float32), np.array([0.3, bad], dtype=np.float32)):
        with pytest.raises(ValueError, match="NaN or inf"):
            env.step(action)
    # the rejected actions did not count as glimpses
    for action in random_actions(2, 2):
        got, want = env.step(action), reference.step(action)
        np.testing.assert_array_equal(got[0], want[0])
        assert got[1:4] == want[1:4]
    assert got[2] is True


def test_out_of_range_actions_are_clipped(make_env, test_split):
    env = make_env(max_glimpses=6, sampler="nearest")
    clipped_env = make_env(max_glimpses=6, sampler="nearest")
    _, info = env.reset(seed=2)
    clipped_env.reset(seed=2)
    image = test_split.images[info["index"]].numpy() / 255.0
    actions = np.array(
        [[5.0, -5.0], [-3.0, 7.0], [1.5, 0.2], [1e6, -1e6], [-1.0001, 0.5], [0.25, -2.0]], dtype=np.float32
    )
    for action in actions:
        observation, reward, _, _, step_info = env.step(action)
        reference = clipped_env.step(np.clip(action, -1.0, 1.0))
        i, j = step_info["glimpse"]
        assert 0.0 <= i <= 27.0 and 0.0 <= j <= 27.0
        np.testing.assert_array_equal(observation, reference[0])
        assert reward == reference[1]
        np.testing.assert_array_equal(step_info["glimpse"], reference[4]["glimpse"])
        assert step_info["value"] == pytest.approx(image[int(round(i)), int(round(j))], abs=1e-6)
    _, info = env.reset(seed=2)
    assert env.step(np.array([5.0, -5.0], dtype=np.float32))[4]["glimpse"].tolist() == [27.0, 0.0]


def test_index_option_selects_dataset_image(make_env, test_split):
    env = make_env(max_glimpses=5, sampler="nearest")
    for k in (0, 1234, 9999):
        image = test_split.images[k].numpy()
        _, info = env.reset(seed=0, options={"index": k})
        assert info["index"] == k
        # the brightest pixels and a dark one
        order = np.argsort(image.flatten())
        pixels = [divmod(int(p), 28) for p in order[[-1, -2, -3, -4, 0]]]
        for i, j in pixels:
            _, _, terminated, _, step_info = env.step(pixel_action(i, j))
            np.testing.assert_allclose(step_info["glimpse"], [i, j], rtol=0, atol=1e-5)
            assert step_info["value"] == pytest.approx(image[i, j] / 255.0, abs=1e-7)
        assert step_info["label"] == int(test_split.labels[k])
    _, info = env.reset(options={"index": np.int64(7)})
    assert info["index"] == 7


@pytest.mark.parametrize("index", [-1, 10_000, 1.5, "3", [1, 2]])
def test_bad_index_option_raises(make_env, index):
    env = make_env()
    with pytest.raises(ValueError, match="index"):
        env.reset(options={"index": index})


def test_image_option_runs_on_user_image(make_env):
    env = make_env(max_glimpses=4)
    blank = np.zeros((28, 28), dtype=np.uint8)
    _, info = env.reset(seed=0, options={"image": blank, "label": 6})
    assert info["index"] == -1
    for action in random_actions(4, 30):
        _, _, terminated, _, step_info = env.step(action)
        assert step_info["value"] == 0.0
    assert terminated and step_info["label"] == 6

    dot = np.zeros((28, 28), dtype=np.uint8)
    dot[5, 9] = 255
    dot[20, 3] = 128
    env = make_env(max_glimpses=3, sampler="nearest")
    env.reset(options={"image": dot, "label": np.int64(2)})
    assert env.step(pixel_action(5, 9))[4]["value"] == 1.0
    assert env.step(pixel_action(20, 3))[4]["value"] == pytest.approx(128 / 255, abs=1e-7)
    assert env.step(pixel_action(9, 5))[4]["value"] == 0.0


@pytest.mark.parametrize(
    ("options", "match"),
    [
        ({"image": np.zeros((28, 28), np.uint8)}, "go together"),
        ({"label": 3}, "go together"),
        ({"image": np.zeros((28, 28), np.uint8), "label": 3, "index": 0}, "either"),
        ({"image": np.zeros((28, 28), np.float32), "label": 3}, "uint8"),
        ({"image": np.zeros((28, 27), np.uint8), "label": 3}, "uint8"),
        ({"image": np.zeros((1, 28, 28), np.uint8), "label": 3}, "uint8"),
        ({"image": np.zeros((28, 28), np.uint8), "label": 10}, "label"),
        ({"image": np.zeros((28, 28), np.uint8), "label": -1}, "label"),
        ({"image": np.zeros((28, 28), np.uint8), "label": 2.0}, "label"),
        ({"seed": 3}, "Unknown reset options"),
        ({"reset_mask": True}, "Unknown reset options"),
    ],
)
def test_bad_image_options_raise(make_env, options, match):
    env = make_env()
    with pytest.raises(ValueError, match=match):
        env.reset(options=options)


def test_observation_does_not_depend_on_label(make_env, test_split):
    image = test_split.images[17].numpy()
    actions = random_actions(5, 40)
    runs = [
        run_episode(make_env(max_glimpses=5), actions, options={"image": image, "label": label}) for label in (3, 8)
    ]
    for obs_a, obs_b in zip(runs[0][1], runs[1][1], strict=True):
        np.testing.assert_array_equal(obs_a, obs_b)
    for info_a, info_b in zip(runs[0][3], runs[1][3], strict=True):
        np.testing.assert_array_equal(info_a["prediction"], info_b["prediction"])
    assert runs[0][3][-1]["label"] == 3 and runs[1][3][-1]["label"] == 8
    assert runs[0][2] != runs[1][2]  # the rewards do use the label


def test_observation_depends_only_on_sampled_pixels(make_env, test_split):
    """Two images that agree on the glimpsed pixels give the same observations."""
    pixels = [(14, 14), (8, 20), (22, 5), (3, 3)]
    original = test_split.images[21].numpy()
    altered = np.random.default_rng(0).integers(0, 256, size=(28, 28), dtype=np.uint8)
    for i, j in pixels:
        altered[i, j] = original[i, j]
    actions = [pixel_action(i, j) for i, j in pixels]
    runs = [
        run_episode(make_env(max_glimpses=4, sampler="nearest"), actions, options={"image": image, "label": 1})
        for image in (original, altered)
    ]
    for obs_a, obs_b in zip(runs[0][1], runs[1][1], strict=True):
        np.testing.assert_array_equal(obs_a, obs_b)
    # while with a kernel that reads neighbours they differ
    runs = [
        run_episode(make_env(max_glimpses=4, sampler="gaussian"), actions, options={"image": image, "label": 1})
        for image in (original, altered)
    ]
    assert not np.array_equal(runs[0][1][-1], runs[1][1][-1])


@pytest.mark.parametrize(
    ("kwargs", "error", "mentions"),
    [
        ({"sampler": "linear"}, ValueError, ["'nearest'", "'bilinear'", "'bicubic'", "'gaussian'"]),
        ({"reward": "sparse"}, ValueError, ["'dense'", "'final'"]),
        ({"split": "validation"}, ValueError, ["'train'", "'test'"]),
        ({"render_mode": "window"}, ValueError, ["None", "'human'", "'rgb_array'"]),
        ({"device": "tpu"}, ValueError, ["'cpu'", "'cuda'", "'auto'"]),
        ({"device": "gpu:0"}, ValueError, ["'cpu'", "'cuda'", "'auto'"]),
        ({"max_glimpses": 0}, ValueError, ["max_glimpses"]),
        ({"max_glimpses": 2.5}, ValueError, ["max_glimpses"]),
        ({"learn_perception": "yes"}, ValueError, ["True or False"]),
        ({"perception": 42}, TypeError, ["PerceptionCore"]),
    ],
)
def test_bad_arguments_raise_listing_valid_values(make_env, kwargs, error, mentions):
    with pytest.raises(error) as raised:
        make_env(**kwargs)
    for text in mentions:
        assert text in str(raised.value)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on machines without CUDA")
def test_cuda_device_without_cuda_raises(make_env):
    with pytest.raises(ValueError, match="CUDA is not available"):
        make_env(device="cuda")


def test_missing_checkpoint_path_raises(make_env, tmp_path):
    with pytest.raises(FileNotFoundError, match="perception=None"):
        make_env(perception=tmp_path / "missing.pt")


def test_checkpoint_path_and_sampler_instance(make_env, core, tmp_path):
    path = tmp_path / "core.pt"
    core.save(path)
    sampler = Sampler("gaussian", sigma=1.5)
    from_path = make_env(perception=path, sampler=sampler)
    shared = make_env(sampler=Sampler("gaussian", sigma=1.5))
    assert from_path.core is not core and shared.core is core  # an instance is shared, not copied
    assert from_path.sim.sampler is sampler
    a = run_episode(from_path, random_actions(3, 50), seed=9)
    b = run_episode(shared, random_actions(3, 50), seed=9)
    for obs_a, obs_b in zip(a[1], b[1], strict=True):
        np.testing.assert_array_equal(obs_a, obs_b)


def test_render_rgb_array_as_documented(make_env, test_split):
    from envs.render import HEADER, SCALE, STRIP

    env = make_env(max_glimpses=3, render_mode="rgb_array")
    _, info = env.reset(seed=4)
    frame = env.render()
    # a header line, the digit at SCALE screen pixels per image pixel, the probability chart below
    header, size = HEADER * SCALE, 28 * SCALE
    assert isinstance(frame, np.ndarray) and frame.dtype == np.uint8
    assert frame.shape == (header + size + STRIP * SCALE, size, 3)
    # no glimpse yet: the digit itself, enlarged, grey and untouched; the label and the guess are written above it
    image = test_split.images[info["index"]].numpy()
    centres = frame[header + SCALE // 2 : header + size : SCALE, SCALE // 2 : size : SCALE]
    np.testing.assert_array_equal(centres, np.repeat(image[:, :, None], 3, axis=2))
    assert (frame[:header] == 255).all(axis=-1).any()  # "label L" in white
    red, green = frame[:header, :, 0].astype(int), frame[:header, :, 1].astype(int)
    assert (abs(red - green) > 100).any()  # "guess G (p ...)": green when right, red when wrong
    chart = frame[header + size :]
    assert (chart == [255, 165, 0]).all(axis=-1).any()  # the guess's bar
    before = frame.copy()
    env.step(pixel_action(14, 14))
    env.step(pixel_action(3, 24))
    frame = env.render()
    assert frame.shape == before.shape and frame.dtype == np.uint8
    assert not np.array_equal(frame[header : header + size], before[header : header + size])  # the trail is drawn
    assert not np.array_equal(frame[:, :, 0], frame[:, :, 2])  # coloured marks


def test_render_human_opens_a_window_and_without_pygame_says_what_to_install(monkeypatch, core):
    from gymnasium.error import DependencyNotInstalled

    from envs import glimpse_env

    env = gymnasium.make("MnistGlimpse-v0", split="test", max_glimpses=2, perception=core, render_mode="human")
    assert env.unwrapped.render_mode == "human"  # the env's own window, not Gymnasium's HumanRendering
    env.reset(seed=0)
    env.step(np.zeros(2, dtype=np.float32))
    assert env.render() is None and env.unwrapped._window is not None
    env.close()
    assert env.unwrapped._window is None
    monkeypatch.setattr(glimpse_env, "_pygame_installed", lambda: False)
    with pytest.raises(DependencyNotInstalled, match='pip install pygame .* render_mode="rgb_array" needs no window'):
        gymnasium.make("MnistGlimpse-v0", split="test", perception=core, render_mode="human")


def test_render_without_render_mode_returns_none(make_env):
    env = make_env()
    env.reset(seed=0)
    with pytest.warns(UserWarning, match="render_mode"):
        assert env.render() is None


def test_gymnasium_make_passes_arguments(core):
    env = gymnasium.make("MnistGlimpse-v0", max_glimpses=2, split="test", perception=core, reward="final")
    assert isinstance(env.unwrapped, MnistGlimpseEnv)
    assert env.unwrapped.max_glimpses == 2 and len(env.unwrapped.sim.data) == 10_000
    assert env.unwrapped.core is core
    env.reset(seed=0)
    env.step(np.zeros(2, dtype=np.float32))
    _, reward, terminated, _, _ = env.step(np.zeros(2, dtype=np.float32))
    assert terminated and reward in (0.0, 1.0)


def snapshot(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {key: value.detach().clone() for key, value in module.state_dict().items()}


def same_weights(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[key], b[key]) for key in a)


@pytest.mark.filterwarnings("error")
def test_learn_perception_trains_a_private_copy_of_the_packaged_core():
    other = MnistGlimpseEnv(split="test", max_glimpses=3)  # runs the packaged core, not learning
    other_before = snapshot(other.core)
    learner = MnistGlimpseEnv(split="test", max_glimpses=3, learn_perception=True, perception_lr=1e-2)
    assert learner.core is not other.core
    learner_before = snapshot(learner.core)
    for episode in range(2):
        run_episode(learner, random_actions(3, 60 + episode), seed=episode)
    assert not same_weights(snapshot(learner.core), learner_before)
    assert same_weights(snapshot(other.core), other_before)
    # environments that do not learn run the one process-wide packaged core; the learner does not
    shared = load_pretrained("cpu", shared=True)
    assert other.core is shared and learner.core is not shared
    assert MnistGlimpseEnv(split="test", max_glimpses=3).core is shared
    assert same_weights(snapshot(shared), other_before)


def test_learn_perception_without_learning_leaves_core_alone(make_env, core):
    before = snapshot(core)
    env = make_env(max_glimpses=3)
    for episode in range(2):
        run_episode(env, random_actions(3, 70 + episode), seed=episode)
    assert same_weights(snapshot(core), before)


@pytest.mark.filterwarnings("error")
def test_learn_perception_step_is_one_adam_step_on_the_episode(make_core):
    """The update equals Adam on the cross-entropy of the replayed episode, and a shared core is trained."""
    learning_core, reference = make_core(3), make_core(3)
    env = MnistGlimpseEnv(
        split="test", max_glimpses=4, perception=learning_core, learn_perception=True, perception_lr=1e-2
    )
    assert env.core is learning_core
    _, _, _, infos = run_episode(env, random_actions(4, 80), seed=5)
    coords = torch.tensor(np.stack([info["glimpse"] for info in infos]))[None]
    values = torch.tensor([info["value"] for info in infos], dtype=torch.float32)[None]
    label = torch.tensor([infos[-1]["label"]])
    optimizer = torch.optim.Adam(reference.parameters(), lr=1e-2)
    loss = perception_loss(reference.replay(coords, values), label)
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    for (name, got), want in zip(learning_core.state_dict().items(), reference.state_dict().values(), strict=True):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5, msg=name)
    assert not same_weights(snapshot(learning_core), snapshot(make_core(3)))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_env_matches_cpu_env(make_core):
    cpu = MnistGlimpseEnv(split="test", max_glimpses=4, perception=make_core(0), device="cpu")
    gpu = MnistGlimpseEnv(split="test", max_glimpses=4, perception=make_core(0, device="cuda"), device="cuda")
    actions = random_actions(4, 90)
    a, b = run_episode(cpu, actions, seed=1), run_episode(gpu, actions, seed=1)
    assert a[0] == b[0]
    for obs_a, obs_b in zip(a[1], b[1], strict=True):
        np.testing.assert_allclose(obs_a, obs_b, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(a[2], b[2], rtol=1e-4, atol=1e-4)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_core_on_other_device_raises(make_core):
    with pytest.raises(ValueError, match="core.to"):
        MnistGlimpseEnv(split="test", perception=make_core(0, device="cuda"), device="cpu")
