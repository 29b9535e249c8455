"""envs.vector_env: the batched environment equals N single environments, and follows Gymnasium's
vector API (spaces, autoreset modes, infos)."""

from __future__ import annotations

import gymnasium
import numpy as np
import pytest
import torch
from gymnasium.vector import AutoresetMode, SyncVectorEnv
from gymnasium.vector.utils import batch_space

import envs
from envs.glimpse_env import MnistGlimpseEnv
from envs.simulator import INDEX_BLOCK, INFO_KEYS
from envs.vector_env import MnistGlimpseVectorEnv

gymnasium.register_envs(envs)

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")

# Batch size 1 vs N changes float32 reduction order a little; nothing else may differ.
TOL = dict(rtol=1e-5, atol=1e-5)


@pytest.fixture
def make_vec(core):
    def make(num_envs: int = 4, **kwargs) -> MnistGlimpseVectorEnv:
        settings = dict(split="test", max_glimpses=3, perception=core, device="cpu", array_type="torch")
        settings.update(kwargs)
        return MnistGlimpseVectorEnv(num_envs=num_envs, **settings)

    return make


class SingleEnvs:
    """N single MnistGlimpseEnv with Gymnasium's vector semantics (as SyncVectorEnv), spelled out."""

    def __init__(self, envs_: list[MnistGlimpseEnv], mode: AutoresetMode) -> None:
        self.envs = envs_
        self.mode = mode
        self.needs_reset = [False] * len(envs_)

    def reset(self, seed: int | None = None, mask=None):
        observations, indices = [], []
        for k, env in enumerate(self.envs):
            if mask is None or mask[k]:
                observation, info = env.reset(seed=None if seed is None else seed + k)
                self.needs_reset[k] = False
            else:
                observation, info = env.sim.observation()[0].numpy(), {"index": int(env.sim.indices[0])}
            observations.append(observation)
            indices.append(info["index"])
        return np.stack(observations), np.array(indices)

    def step(self, actions: np.ndarray):
        n = len(self.envs)
        obs = [None] * n
        rewards = np.zeros(n, dtype=np.float32)
        terminated = np.zeros(n, dtype=bool)
        infos = [{} for _ in range(n)]
        final_obs, final_infos = [None] * n, [None] * n
        for k, env in enumerate(self.envs):
            if self.mode == AutoresetMode.NEXT_STEP and self.needs_reset[k]:
                obs[k], infos[k] = env.reset()
                self.needs_reset[k] = False
                continue
            obs[k], rewards[k], terminated[k], truncated, infos[k] = env.step(actions[k])
            assert truncated is False
            if self.mode == AutoresetMode.SAME_STEP and terminated[k]:
                final_obs[k], final_infos[k] = obs[k], infos[k]
                obs[k], infos[k] = env.reset()
            else:
                self.needs_reset[k] = bool(terminated[k])
        return np.stack(obs), rewards, terminated, infos, (final_obs, final_infos)

    def indices(self) -> np.ndarray:
        return np.array([int(env.sim.indices[0]) for env in self.envs])


def check_info(info: dict, ref_infos: list, rows, tol=TOL) -> None:
    """The batched ``info`` holds, in each of ``rows``, what that single environment's info holds, and its
    ``_key`` masks are ``True`` exactly there."""
    rows = list(rows)
    expected_mask = [k in rows for k in range(len(ref_infos))]
    assert set(info) == {*INFO_KEYS, *(f"_{key}" for key in INFO_KEYS)} | (
        {"final_obs", "_final_obs", "final_info", "_final_info"} & set(info)
    )
    for key in INFO_KEYS:
        assert torch.as_tensor(info[f"_{key}"]).tolist() == expected_mask
        for k in rows:
            got, want = torch.as_tensor(info[key][k]).cpu(), torch.as_tensor(ref_infos[k][key])
            assert got.dtype == want.dtype, (key, got.dtype, want.dtype)
            if got.is_floating_point():
                torch.testing.assert_close(got, want, **tol)
            else:
                assert torch.equal(got, want), (key, k, got, want)


def check_step(vec_out, ref_out, vec: MnistGlimpseVectorEnv, ref: SingleEnvs, tol=TOL) -> None:
    obs, reward, terminated, truncated, info = [x.cpu() if isinstance(x, torch.Tensor) else x for x in vec_out[:4]] + [
        vec_out[4]
    ]
    ref_obs, ref_reward, ref_terminated, ref_infos, (ref_final, ref_final_infos) = ref_out
    torch.testing.assert_close(obs, torch.as_tensor(ref_obs), **tol)
    torch.testing.assert_close(reward, torch.as_tensor(ref_reward), **tol)
    assert terminated.dtype == torch.bool and truncated.dtype == torch.bool
    assert terminated.tolist() == ref_terminated.tolist()
    assert not truncated.any()
    assert np.array_equal(vec.sim.indices.cpu().numpy(), ref.indices())
    check_info(info, ref_infos, range(vec.num_envs), tol)  # every row reports, stepped or reset
    ended = np.flatnonzero(ref_terminated)
    if ref.mode == AutoresetMode.SAME_STEP and len(ended):
        assert info["_final_obs"].tolist() == info["_final_info"].tolist() == ref_terminated.tolist()
        for k in ended:
            torch.testing.assert_close(info["final_obs"][k].cpu(), torch.as_tensor(ref_final[k]), **tol)
        check_info(info["final_info"], ref_final_infos, ended, tol)
        assert (info["label"] == -1).all()  # the new episodes' first info: no label
    else:
        assert "final_obs" not in info and "final_info" not in info


def compare_rollout(vec, ref, seed: int, steps: int, action_seed: int, tol=TOL) -> dict[str, int]:
    """Drive both with the same random actions (some out of range); return how often things happened."""
    obs, info = vec.reset(seed=seed)
    ref_obs, ref_indices = ref.reset(seed=seed)
    torch.testing.assert_close(obs.cpu(), torch.as_tensor(ref_obs), **tol)
    assert info["index"].cpu().tolist() == ref_indices.tolist()
    rng = np.random.default_rng(action_seed)
    counts = {"terminations": 0}
    for _ in range(steps):
        actions = rng.uniform(-1.1, 1.1, size=(vec.num_envs, 2)).astype(np.float32)
        vec_out = vec.step(torch.as_tensor(actions, device=vec.device))
        ref_out = ref.step(actions)
        check_step(vec_out, ref_out, vec, ref, tol)
        counts["terminations"] += int(ref_out[2].sum())
    return counts


@pytest.mark.parametrize("mode", [AutoresetMode.NEXT_STEP, AutoresetMode.SAME_STEP])
@pytest.mark.parametrize("reward", ["dense", "final"])
def test_batched_equals_single_envs(make_vec, core, mode, reward):
    n, glimpses = 4, 3
    vec = make_vec(n, max_glimpses=glimpses, autoreset_mode=mode, reward=reward)
    ref = SingleEnvs(
        [MnistGlimpseEnv(split="test", max_glimpses=glimpses, perception=core, reward=reward) for _ in range(n)], mode
    )
    counts = compare_rollout(vec, ref, seed=11, steps=3 * (glimpses + 1) + 1, action_seed=1)
    assert counts["terminations"] >= 3 * n  # three episodes each, autoreset included


@pytest.mark.parametrize("mode", [AutoresetMode.NEXT_STEP, AutoresetMode.SAME_STEP])
def test_batched_equals_single_envs_past_index_block(make_vec, core, mode):
    """More than INDEX_BLOCK episodes per sub-environment, so each index stream is refilled."""
    n, glimpses = 3, 1
    episodes = INDEX_BLOCK + 5
    steps_per_episode = glimpses + (mode == AutoresetMode.NEXT_STEP)
    vec = make_vec(n, max_glimpses=glimpses, autoreset_mode=mode, sampler="nearest")
    ref = SingleEnvs(
        [MnistGlimpseEnv(split="test", max_glimpses=glimpses, perception=core, sampler="nearest") for _ in range(n)],
        mode,
    )
    counts = compare_rollout(vec, ref, seed=2024, steps=episodes * steps_per_episode, action_seed=2)
    assert counts["terminations"] == n * episodes
    assert int(vec._streams.cursor.min()) >= 1  # a second block is in use
    assert all(env._streams.cursor[0] == vec._streams.cursor[0] for env in ref.envs)


def flat_info(info: dict, prefix: str = "") -> dict:
    """``{"final_info/label": ..., "label": ...}``: a (nested) info dict, flat."""
    flat = {}
    for key, value in info.items():
        flat.update(flat_info(value, f"{prefix}{key}/") if isinstance(value, dict) else {f"{prefix}{key}": value})
    return flat


def assert_same_info(info: dict, sync_info: dict) -> None:
    """The same keys, dtypes, shapes and ``_key`` masks; equal values wherever a mask is set."""
    info, sync_info = flat_info(info), flat_info(sync_info)
    assert sorted(info) == sorted(sync_info)
    for key, value in info.items():
        want = sync_info[key]
        assert isinstance(value, np.ndarray), key
        assert (value.dtype, value.shape) == (want.dtype, want.shape), key
        if key.rsplit("/", 1)[-1].startswith("_"):
            np.testing.assert_array_equal(value, want, err_msg=key)
    for key, value in info.items():
        name = key.rsplit("/", 1)[-1]
        if name.startswith("_"):
            continue
        mask = info[key.replace(name, f"_{name}")] if "/" in key else info[f"_{name}"]
        for k in np.flatnonzero(mask):
            if value.dtype == object:  # final_obs: one observation per row
                np.testing.assert_allclose(value[k], sync_info[key][k], **TOL)
            elif value.dtype.kind == "f":
                np.testing.assert_allclose(value[k], sync_info[key][k], **TOL, err_msg=key)
            else:
                np.testing.assert_array_equal(value[k], sync_info[key][k], err_msg=key)


@pytest.mark.parametrize("mode", list(AutoresetMode))
def test_batched_equals_sync_vector_env(make_vec, core, mode):
    """Gymnasium's own SyncVectorEnv over single environments gives the same batch, and the same infos
    (keys, dtypes, masks and values) step for step, in every autoreset mode: at reset, at the steps that
    end episodes and those after, and at resets of some sub-environments."""
    n, glimpses = 3, 2
    vec = make_vec(n, max_glimpses=glimpses, autoreset_mode=mode, array_type="numpy")
    assert vec.autoreset_mode == vec.metadata["autoreset_mode"] == mode
    sync = SyncVectorEnv(
        [lambda: MnistGlimpseEnv(split="test", max_glimpses=glimpses, perception=core)] * n, autoreset_mode=mode
    )
    obs, info = vec.reset(seed=5)
    sync_obs, sync_info = sync.reset(seed=5)
    np.testing.assert_allclose(obs, sync_obs, **TOL)
    assert_same_info(info, sync_info)
    assert (info["label"] == -1).all() and (info["glimpse"] == -1).all()
    rng = np.random.default_rng(3)
    ended = 0
    for step in range(9):
        if step in (3, 7):  # restart some (disabled: the ended ones, as Gymnasium asks)
            mask = np.array([True, False, True]) if step == 3 else np.array([False, True, False])
            obs, info = vec.reset(options={"reset_mask": mask})
            sync_obs, sync_info = sync.reset(options={"reset_mask": mask.copy()})
            np.testing.assert_allclose(obs[mask], sync_obs[mask], **TOL)
            assert_same_info(info, sync_info)
            if mode == AutoresetMode.DISABLED:
                vec.reset(options={"reset_mask": ~mask})
                sync.reset(options={"reset_mask": ~mask})
        actions = rng.uniform(-1, 1, size=(n, 2)).astype(np.float32)
        obs, reward, terminated, truncated, info = vec.step(actions)
        sync_obs, sync_reward, sync_terminated, sync_truncated, sync_info = sync.step(actions)
        np.testing.assert_allclose(obs, sync_obs, **TOL)
        np.testing.assert_allclose(reward, sync_reward, **TOL)
        np.testing.assert_array_equal(terminated, sync_terminated)
        np.testing.assert_array_equal(truncated, sync_truncated)
        assert_same_info(info, sync_info)
        ended += int(terminated.sum())
        if mode == AutoresetMode.SAME_STEP and terminated.any():
            assert (info["final_info"]["label"][terminated] >= 0).all() and (info["label"] == -1).all()
        elif terminated.any():
            assert (info["label"][terminated] >= 0).all()
        assert (info["label"][~terminated] == -1).all() and not info["correct"][~terminated].any()
        if mode == AutoresetMode.DISABLED and terminated.any():
            with pytest.raises(RuntimeError, match="reset_mask"):
                vec.step(actions)
            vec.reset(options={"reset_mask": terminated})
            sync.reset(options={"reset_mask": terminated.copy()})
    assert ended >= 2 * n


@pytest.mark.parametrize("mode", [AutoresetMode.NEXT_STEP, AutoresetMode.SAME_STEP])
def test_partial_reset_mask_then_staggered_episodes(make_vec, core, mode):
    """reset_mask restarts some episodes mid-way; episodes then end at different steps."""
    n, glimpses = 4, 3
    vec = make_vec(n, max_glimpses=glimpses, autoreset_mode=mode)
    ref = SingleEnvs([MnistGlimpseEnv(split="test", max_glimpses=glimpses, perception=core) for _ in range(n)], mode)
    vec.reset(seed=7)
    ref.reset(seed=7)
    rng = np.random.default_rng(4)
    before = None
    for step in range(12):
        if step in (1, 5):
            mask = np.array([True, False, True, False]) if step == 1 else np.array([False, False, False, True])
            before = vec.sim.observation().clone()
            obs, info = vec.reset(options={"reset_mask": mask})
            ref_obs, ref_indices = ref.reset(mask=mask)
            torch.testing.assert_close(obs, torch.as_tensor(ref_obs), **TOL)
            assert info["index"].tolist() == ref_indices.tolist()
            assert torch.equal(obs[~torch.as_tensor(mask)], before[~torch.as_tensor(mask)])  # others untouched
            assert bool((obs[torch.as_tensor(mask), : core.histogram_size] == 0).all())
        actions = rng.uniform(-1, 1, size=(n, 2)).astype(np.float32)
        out = vec.step(actions)
        ref_out = ref.step(actions)
        check_step(out, ref_out, vec, ref)
        if step == 2:  # rows 0 and 2 restarted at step 1 and are one glimpse behind
            assert ref_out[2].tolist() == [False, True, False, True]


def test_next_step_autoreset_returns_first_obs_with_zero_reward(make_vec, core):
    vec = make_vec(3, max_glimpses=2)
    assert vec.metadata["autoreset_mode"] == AutoresetMode.NEXT_STEP
    vec.reset(seed=0)
    zeros = torch.zeros(3, 2)
    vec.step(zeros)
    _, _, terminated, _, info = vec.step(zeros)
    assert terminated.all() and info["_label"].all()
    obs, reward, terminated, truncated, info = vec.step(torch.full((3, 2), 0.5))
    assert torch.equal(reward, torch.zeros(3))
    assert not terminated.any() and not truncated.any()
    assert torch.equal(obs[:, : core.histogram_size], torch.zeros(3, core.histogram_size))
    assert torch.equal(obs[:, core.histogram_size :], torch.full((3, 10), 0.1))
    assert int(vec.sim.elapsed.sum()) == 0  # the action was ignored
    _, _, terminated, _, _ = vec.step(zeros)
    assert not terminated.any()


def test_same_step_autoreset_keeps_last_obs_in_infos(make_vec, core):
    vec = make_vec(3, max_glimpses=2, autoreset_mode="same_step")
    assert vec.metadata["autoreset_mode"] == AutoresetMode.SAME_STEP
    assert MnistGlimpseVectorEnv.metadata["autoreset_mode"] == AutoresetMode.NEXT_STEP  # class default intact
    vec.reset(seed=0)
    _, _, terminated, _, info = vec.step(torch.zeros(3, 2))
    assert not terminated.any() and "final_obs" not in info
    obs, reward, terminated, _, info = vec.step(torch.full((3, 2), 0.3))
    assert terminated.all() and info["_final_obs"].all()
    assert float(info["final_obs"][:, : core.histogram_size].sum()) > 0  # two glimpses' worth of histogram
    assert torch.equal(obs[:, : core.histogram_size], torch.zeros(3, core.histogram_size))  # the next episode
    assert not torch.equal(info["final_obs"], obs)
    assert reward.abs().sum() > 0
    obs, reward, terminated, _, info = vec.step(torch.zeros(3, 2))
    assert not terminated.any() and "final_obs" not in info
    assert int(vec.sim.elapsed.min()) == 1  # the action after the reset counted


def test_spaces_batch_the_single_spaces(make_vec, core):
    vec = make_vec(5, max_glimpses=4)
    single = MnistGlimpseEnv(split="test", max_glimpses=4, perception=core)
    assert vec.single_observation_space == single.observation_space
    assert vec.single_action_space == single.action_space
    assert vec.observation_space == batch_space(single.observation_space, 5)
    assert vec.action_space == batch_space(single.action_space, 5)
    assert vec.observation_space.shape == (5, core.observation_size)
    assert vec.action_space.shape == (5, 2)
    obs, _ = vec.reset(seed=0)
    assert obs.shape == (5, core.observation_size) and obs.dtype == torch.float32
    for _ in range(4):
        obs, reward, *_ = vec.step(vec.action_space.sample())
        assert vec.observation_space.contains(obs.numpy())
        assert reward.dtype == torch.float32


def test_seed_list_and_reseeding(make_vec, core):
    vec = make_vec(3, max_glimpses=1)
    singles = [MnistGlimpseEnv(split="test", max_glimpses=1, perception=core) for _ in range(3)]
    _, info = vec.reset(seed=[9, 2, 40])
    assert info["index"].tolist() == [env.reset(seed=s)[1]["index"] for env, s in zip(singles, [9, 2, 40])]
    _, again = vec.reset(seed=[9, 2, 40])
    assert again["index"].tolist() == info["index"].tolist()
    _, continued = vec.reset()  # no seed: streams go on
    assert continued["index"].tolist() == [env.reset()[1]["index"] for env in singles]
    with pytest.raises(ValueError, match="seeds"):
        vec.reset(seed=[1, 2])


def test_reset_with_seed_and_mask_matches_sync_vector_env(make_vec, core):
    """Gymnasium reseeds only the masked sub-environments; the others keep their image streams."""
    vec = make_vec(3, max_glimpses=1, array_type="numpy")
    sync = SyncVectorEnv([lambda: MnistGlimpseEnv(split="test", max_glimpses=1, perception=core)] * 3)
    vec.reset(seed=0)
    sync.reset(seed=0)
    mask = np.array([False, True, False])
    zeros = np.zeros((3, 2), dtype=np.float32)
    vec.step(zeros)
    sync.step(zeros)
    vec.reset(seed=100, options={"reset_mask": mask})
    sync.reset(seed=100, options={"reset_mask": mask.copy()})
    for _ in range(6):  # autoresets draw the next images of each stream
        vec.step(zeros)
        sync.step(zeros)
        np.testing.assert_array_equal(vec.sim.indices.numpy(), [int(env.sim.indices[0]) for env in sync.envs])


def test_index_and_image_options(make_vec, test_split):
    vec = make_vec(3, max_glimpses=2, sampler="nearest")
    _, info = vec.reset(options={"index": np.array([5, 0, 9999])})
    assert info["index"].tolist() == [5, 0, 9999]
    action = torch.tensor([[14.0, 14.0]] * 3) * (2 / 27) - 1
    _, _, _, _, step_info = vec.step(action)
    expected = test_split.images[[5, 0, 9999], 14, 14].float() / 255
    torch.testing.assert_close(step_info["value"], expected, rtol=0, atol=1e-7)

    images = np.zeros((3, 28, 28), dtype=np.uint8)
    images[1, 14, 14] = 255
    _, info = vec.reset(options={"image": images, "label": np.array([1, 2, 3])})
    assert info["index"].tolist() == [-1, -1, -1]
    vec.step(action)
    _, _, terminated, _, step_info = vec.step(action)
    assert terminated.all()
    assert step_info["value"].tolist() == [0.0, 1.0, 0.0]
    assert step_info["label"].tolist() == [1, 2, 3]

    # reset_mask with an index: only the masked rows take it
    _, info = vec.reset(options={"index": np.array([7, 8, 9]), "reset_mask": np.array([False, True, False])})
    assert info["index"].tolist() == [-1, 8, -1]
    with pytest.raises(ValueError, match="index"):
        vec.reset(options={"index": np.array([0, 1, 10_000])})
    with pytest.raises(ValueError, match="index"):
        vec.reset(options={"index": 3})
    with pytest.raises(ValueError, match="reset_mask"):
        vec.reset(options={"reset_mask": np.array([1, 0, 1])})


def test_numpy_array_type(make_vec):
    numpy_vec = make_vec(3, max_glimpses=2, array_type="numpy")
    torch_vec = make_vec(3, max_glimpses=2)
    obs, info = numpy_vec.reset(seed=1)
    torch_obs, torch_info = torch_vec.reset(seed=1)
    assert isinstance(obs, np.ndarray) and obs.dtype == np.float32
    assert isinstance(info["index"], np.ndarray)
    np.testing.assert_array_equal(obs, torch_obs.numpy())
    rng = np.random.default_rng(0)
    for _ in range(5):
        actions = rng.uniform(-1, 1, size=(3, 2)).astype(np.float32)
        out = numpy_vec.step(actions)
        torch_out = torch_vec.step(torch.as_tensor(actions))
        for got, want in zip(out[:4], torch_out[:4], strict=True):
            assert isinstance(got, np.ndarray)
            np.testing.assert_array_equal(got, want.numpy())
        assert out[1].dtype == np.float32 and out[2].dtype == np.bool_ and out[3].dtype == np.bool_
        assert out[4].keys() == torch_out[4].keys()
        for key, value in out[4].items():
            assert isinstance(value, np.ndarray), key
            np.testing.assert_array_equal(value, torch_out[4][key].numpy())


def test_returned_arrays_are_not_internal_state(make_vec):
    """Editing what step() returned in place must not change later steps."""
    for array_type in ("torch", "numpy"):
        vec = make_vec(2, max_glimpses=1, array_type=array_type)
        vec.reset(seed=0)
        zeros = np.zeros((2, 2), dtype=np.float32)
        for _ in range(3):  # ends, autoresets, ends
            obs, reward, terminated, truncated, info = vec.step(zeros)
            obs[:] = 7.0
            terminated[:] = True
            truncated[:] = True
            reward[:] = 5.0
        obs, reward, terminated, truncated, info = vec.step(zeros)  # the autoreset step
        assert not truncated.any() and not terminated.any() and not reward.any()
        assert float(obs[:, -10:].sum()) == pytest.approx(2.0)  # uniform predictions
        obs, reward, terminated, truncated, info = vec.step(zeros)
        assert terminated.all() and not truncated.any()


def test_make_vec_returns_the_class(core):
    vec = gymnasium.make_vec(
        "MnistGlimpse-v0",
        num_envs=4,
        vectorization_mode="vector_entry_point",
        split="test",
        device="cpu",
        perception=core,
        max_glimpses=2,
    )
    assert type(vec) is MnistGlimpseVectorEnv
    assert vec.num_envs == 4 and vec.max_glimpses == 2 and len(vec.sim.data) == 10_000 and vec.core is core
    obs, _ = vec.reset(seed=0)
    assert obs.shape == (4, core.observation_size)


def test_make_vec_default_arguments():
    vec = gymnasium.make_vec("MnistGlimpse-v0", num_envs=4, vectorization_mode="vector_entry_point")
    assert isinstance(vec, MnistGlimpseVectorEnv)
    assert vec.num_envs == 4 and vec.max_glimpses == 25
    assert vec.device.type == ("cuda" if torch.cuda.is_available() else "cpu")  # device="auto"


@pytest.mark.parametrize(
    "actions",
    [np.zeros((4, 3)), np.zeros((3, 2)), np.zeros(2), np.zeros((4, 2, 1)), np.zeros((1, 2))],
    ids=["4x3", "3x2", "2", "4x2x1", "1x2"],
)
def test_bad_action_shape_raises(make_vec, actions):
    vec = make_vec(4)
    vec.reset(seed=0)
    with pytest.raises(ValueError, match=r"shape \(4, 2\)"):
        vec.step(actions)


@pytest.mark.parametrize("mode", ["next_step", "same_step"])
def test_bad_actions_raise_on_every_step(make_vec, mode):
    """Also on the autoreset step (whose actions are ignored) and after a partial reset."""
    vec = make_vec(2, max_glimpses=1, autoreset_mode=mode)
    vec.reset(seed=0)
    good = np.zeros((2, 2), dtype=np.float32)
    for step in range(4):
        if step == 2:
            vec.reset(options={"reset_mask": np.array([True, False])})
        with pytest.raises(ValueError, match="shape"):
            vec.step(np.zeros((2, 3), dtype=np.float32))
        with pytest.raises(ValueError, match="NaN"):
            vec.step(np.array([[0.0, np.nan], [0.0, 0.0]], dtype=np.float32))
        vec.step(good)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_actions_raise(make_vec, bad):
    vec = make_vec(4)
    vec.reset(seed=0)
    actions = np.zeros((4, 2), dtype=np.float32)
    actions[2, 1] = bad
    with pytest.raises(ValueError, match="NaN or inf"):
        vec.step(actions)
    assert int(vec.sim.elapsed.sum()) == 0
    vec.step(np.zeros((4, 2), dtype=np.float32))
    assert vec.sim.elapsed.tolist() == [1, 1, 1, 1]


def test_out_of_range_actions_are_clipped(make_vec):
    vec = make_vec(2, sampler="nearest")
    vec.reset(seed=0)
    _, _, _, _, info = vec.step(np.array([[3.0, -3.0], [-1e9, 1e9]], dtype=np.float32))
    assert info["glimpse"].tolist() == [[27.0, 0.0], [0.0, 27.0]]


@pytest.mark.parametrize(
    ("kwargs", "mentions"),
    [
        ({"num_envs": 0}, ["num_envs"]),
        ({"num_envs": 2.0}, ["num_envs"]),
        ({"num_envs": True}, ["num_envs"]),
        ({"autoreset_mode": "sometimes"}, ["next_step", "same_step", "disabled"]),
        ({"array_type": "jax"}, ["'torch'", "'numpy'"]),
        ({"render_mode": "rgb_array"}, ["does not render"]),
        ({"sampler": "area"}, ["'bilinear'"]),
        ({"reward": "sparse"}, ["'dense'", "'final'"]),
        ({"split": "val"}, ["'train'", "'test'"]),
        ({"device": "tpu"}, ["'cpu'", "'auto'"]),
    ],
)
def test_bad_arguments_raise(make_vec, kwargs, mentions):
    settings = {"num_envs": 2, **kwargs}
    with pytest.raises(ValueError) as error:
        make_vec(**settings)
    for text in mentions:
        assert text in str(error.value)


@pytest.mark.filterwarnings("error")
def test_learn_perception_updates_shared_core(make_core):
    core = make_core(4)
    before = {k: v.clone() for k, v in core.state_dict().items()}
    vec = MnistGlimpseVectorEnv(3, max_glimpses=2, split="test", perception=core, learn_perception=True, device="cpu")
    vec.reset(seed=0)
    vec.step(np.zeros((3, 2), dtype=np.float32))
    assert all(torch.equal(before[k], v) for k, v in core.state_dict().items())  # nothing ended yet
    vec.step(np.full((3, 2), 0.2, dtype=np.float32))
    assert not all(torch.equal(before[k], v) for k, v in core.state_dict().items())


@cuda
@pytest.mark.parametrize("mode", [AutoresetMode.NEXT_STEP, AutoresetMode.SAME_STEP])
def test_batched_cuda_equals_single_cpu_envs(make_core, mode):
    n, glimpses = 4, 2
    cpu_core, cuda_core = make_core(0), make_core(0, device="cuda")
    vec = MnistGlimpseVectorEnv(
        n,
        max_glimpses=glimpses,
        split="test",
        perception=cuda_core,
        device="cuda",
        autoreset_mode=mode,
        array_type="torch",
    )
    assert vec.device.type == "cuda"
    ref = SingleEnvs(
        [MnistGlimpseEnv(split="test", max_glimpses=glimpses, perception=cpu_core) for _ in range(n)], mode
    )
    counts = compare_rollout(
        vec, ref, seed=3, steps=INDEX_BLOCK * (glimpses + 1) + 4, action_seed=5, tol=dict(rtol=1e-4, atol=1e-4)
    )
    assert counts["terminations"] > INDEX_BLOCK * n


def test_reset_index_of_any_integer_dtype_and_a_refused_reset_changes_nothing(make_vec):
    """int32/uint8/... indices reset like int64; an index out of range is refused before any state changes."""
    vec = make_vec(3, max_glimpses=2)
    for dtype in (np.int8, np.int32, np.uint16, np.int64):
        obs, info = vec.reset(options={"index": np.array([5, 0, 9], dtype=dtype)})
        assert info["index"].tolist() == [5, 0, 9]
    vec.reset(seed=1)
    vec.step(np.zeros((3, 2), dtype=np.float32))
    before = (vec.sim.indices.clone(), vec.sim.labels.clone(), vec.sim.elapsed.clone(), vec.sim.observation().clone())
    with pytest.raises(ValueError, match="must be in \\[0, 10000\\)"):
        vec.reset(seed=7, options={"index": np.array([1, 2, 10_000], dtype=np.int32)})
    after = (vec.sim.indices, vec.sim.labels, vec.sim.elapsed, vec.sim.observation())
    assert all(torch.equal(x, y) for x, y in zip(before, after))


def test_infos_hold_no_label_before_an_episode_ends(make_vec):
    vec = make_vec(4, max_glimpses=2)
    vec.reset(seed=0)
    _, _, terminated, _, info = vec.step(np.zeros((4, 2), dtype=np.float32))
    assert not terminated.any() and (info["label"] == -1).all() and not info["correct"].any()
    _, _, terminated, _, info = vec.step(np.zeros((4, 2), dtype=np.float32))
    assert terminated.all() and torch.equal(info["label"], vec.sim.labels)
