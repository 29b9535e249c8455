"""Bad input to the environments and the SB3 adapter: checked before any conversion, refused with a
message that names the problem, stays short at any batch size, and changes no state."""

from __future__ import annotations

import re
import warnings

import gymnasium
import numpy as np
import pytest
import torch

import envs
from envs.glimpse_env import MnistGlimpseEnv
from envs.perception import PerceptionCore
from envs.vector_env import MnistGlimpseVectorEnv

gymnasium.register_envs(envs)


def make_vec(core, num_envs: int = 4, **kwargs) -> MnistGlimpseVectorEnv:
    settings = dict(split="test", max_glimpses=3, perception=core, device="cpu", array_type="numpy")
    return MnistGlimpseVectorEnv(num_envs=num_envs, **{**settings, **kwargs})


def damaged_copy(core: PerceptionCore, bad: float) -> PerceptionCore:
    damaged = PerceptionCore(core.config)
    damaged.load_state_dict(core.state_dict())
    with torch.no_grad():
        damaged.head.net[-1].bias[2] = bad
    return damaged


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_a_core_object_with_a_non_finite_weight_is_refused_where_it_enters(tmp_path, core, bad):
    damaged = damaged_copy(core, bad)
    with pytest.raises(ValueError, match=r"non-finite \(NaN or inf\) weights in \['head\.net\.\d+\.bias'\]"):
        gymnasium.make("MnistGlimpse-v0", split="test", perception=damaged)
    with pytest.raises(ValueError, match="non-finite"):
        make_vec(damaged)
    with pytest.raises(ValueError, match="non-finite .* Save a core from before the divergence or retrain it"):
        damaged.save(tmp_path / "core.pt")
    assert not (tmp_path / "core.pt").exists() and list(tmp_path.iterdir()) == []
    core.save(tmp_path / "core.pt")  # a finite core still saves
    assert (tmp_path / "core.pt").is_file()


# --- the SB3 adapter: the batched env's checks, before any conversion ---------------------------------


def test_sb3_adapter_checks_actions_before_converting_them(core):
    from envs.sb3 import MnistGlimpseSB3VecEnv

    pixel = MnistGlimpseSB3VecEnv(3, split="test", max_glimpses=3, perception=core, device="cpu", action_type="pixel")
    pixel.reset()
    with pytest.raises(ValueError, match="Pixel actions are integers .* got dtype float64"):
        pixel.step(np.array([3.5, 1.0, 2.0]))  # was truncated to 3 and taken
    assert pixel.venv.sim.elapsed.tolist() == [0, 0, 0]
    pixel.step(np.array([3, 1, 2]))
    assert pixel.venv.sim.read.flatten(1)[:, :4].nonzero().tolist() == [[0, 3], [1, 1], [2, 2]]

    continuous = MnistGlimpseSB3VecEnv(2, split="test", max_glimpses=3, perception=core, device="cpu")
    continuous.reset()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no numpy cast warning on the way
        with pytest.raises(ValueError) as error:
            continuous.step(np.array([[0.0, np.nan], [0.0, 0.0]]))
    assert "NaN or inf in 1 of 2 rows (row 0: [0.0, nan])" in str(error.value)
    assert "diverged policy" in str(error.value) and "-9223372036854775808" not in str(error.value)
    continuous.step(np.array([[1e300, 0.0], [0.0, -1e300]]))  # finite float64: clipped, as the batched env does
    assert continuous.venv.sim.trail[:, 0].tolist() == [[27.0, 13.5], [13.5, 0.0]]


# --- messages that stay short at any batch size; integer dtypes; seeds; options ----------------------


def test_one_bad_row_in_a_large_batch_gives_a_short_message_naming_the_row_and_the_count(core):
    n = 5000
    vec = make_vec(core, n, action_type="pixel", sampler="nearest")
    vec.reset(seed=0)
    actions = np.zeros(n, dtype=np.int64)
    actions[17] = 800
    with pytest.raises(ValueError) as error:
        vec.step(actions)
    assert (
        str(error.value) == "Pixel actions must be integers in [0, 784); out of range in 1 of 5000 rows (row 17: 800)."
    )
    actions[[3, 40, 41, 42, 43, 44, 4999]] = -1
    with pytest.raises(ValueError) as error:
        vec.step(actions)
    message = str(error.value)
    assert "8 of 5000 rows (row 3: -1; row 17: 800; row 40: -1; row 41: -1; row 42: -1; and 3 more)" in message
    assert len(message) < 200
    continuous = make_vec(core, n)
    continuous.reset(seed=0)
    bad = np.zeros((n, 2), dtype=np.float32)
    bad[4321, 1] = np.inf
    with pytest.raises(ValueError, match=re.escape("NaN or inf in 1 of 5000 rows (row 4321: [0.0, inf])")) as error:
        continuous.step(bad)
    assert len(str(error.value)) < 300
    with pytest.raises(ValueError) as error:
        continuous.reset(options={"index": np.full(n, 10_000)})
    assert "out of range in 5000 of 5000 rows (row 0: 10000;" in str(error.value) and len(str(error.value)) < 200
    with pytest.raises(ValueError) as error:
        continuous.reset(options={"index": list(range(n - 1))})
    assert "got list of dtype object and shape (4999,)" in str(error.value) and len(str(error.value)) < 200
    labels = np.zeros(n, dtype=np.int64)
    labels[2500] = 10
    with pytest.raises(ValueError) as error:
        continuous.reset(options={"image": np.zeros((n, 28, 28), dtype=np.uint8), "label": labels})
    assert (
        str(error.value)
        == "reset option 'label' must be class(es) in 0..9; out of range in 1 of 5000 rows (row 2500: 10)."
    )


def test_unsigned_pixel_actions_are_checked_not_wrapped(core):
    vec = make_vec(core, 3, action_type="pixel", sampler="nearest")
    vec.reset(seed=0)
    for bad in (np.array([1, 2, 2**63 + 5], dtype=np.uint64), torch.tensor([1, 2, 2**63 + 5], dtype=torch.uint64)):
        with pytest.raises(ValueError, match=r"out of range in 1 of 3 rows \(row 2: 9223372036854775813\)"):
            vec.step(bad)
    assert vec.sim.elapsed.tolist() == [0, 0, 0]
    vec.step(np.array([783, 0, 29], dtype=np.uint64))
    vec.step(torch.tensor([5, 6, 7], dtype=torch.uint8))
    assert vec.sim.trail[:, 0].tolist() == [[27.0, 27.0], [0.0, 0.0], [1.0, 1.0]]


def test_a_sequence_of_n_seeds_is_taken_as_gymnasium_takes_a_list(core):
    vec = make_vec(core, 3)
    _, from_array = vec.reset(seed=np.arange(5, 8))
    _, from_list = vec.reset(seed=[5, 6, 7])
    _, from_int = vec.reset(seed=5)
    assert from_array["index"].tolist() == from_list["index"].tolist() == from_int["index"].tolist()
    _, mixed = vec.reset(seed=[5, None, np.int32(7)])
    assert mixed["index"][[0, 2]].tolist() == from_int["index"][[0, 2]].tolist()
    before = vec.sim.indices.tolist()
    for seed, match in [
        (np.arange(4), r"3 non-negative integers .* got int64 of shape \(4,\)"),
        (np.array([1.0, 2.0, 3.0]), r"got float64 of shape \(3,\)"),
        (np.array([0, -1, 2]), "non-negative"),
        ([0, -1, "2"], re.escape("2 of 3 rows (row 1: -1; row 2: '2')")),
        ([0, True, 2], "non-negative integers or None"),
        (-3, "non-negative"),
        (1.5, "seed must be an int or a list of 3 ints, got 1.5"),
    ]:
        with pytest.raises(ValueError, match=match):
            vec.reset(seed=seed)
    assert vec.sim.indices.tolist() == before  # a refused reset changes nothing


@pytest.mark.parametrize("options", [["index"], "index", 3])
def test_reset_options_that_are_not_a_dict_are_refused_clearly(core, options):
    single = MnistGlimpseEnv(split="test", max_glimpses=3, perception=core)
    vec = make_vec(core, 2)
    for env in (single, vec):
        with pytest.raises(TypeError, match="reset options must be a dict such as {'index': ...}, got"):
            env.reset(options=options)


# --- silent conversions ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "action",
    [np.array([True, False]), ["0.1", "0.2"], np.array([0.1 + 0.5j, 0.2]), np.array([0.1, 0.2], dtype=object)],
    ids=["bool", "strings", "complex", "object"],
)
def test_bool_string_complex_and_object_actions_are_refused(core, action):
    env = MnistGlimpseEnv(split="test", max_glimpses=3, perception=core)
    env.reset(seed=0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no ComplexWarning: refused before any cast
        with pytest.raises(ValueError, match="Actions are glimpse coordinates, real numbers in \\[-1, 1\\], got dtype"):
            env.step(action)
    assert env.unwrapped.sim.elapsed.tolist() == [0]
    vec = make_vec(core, 2)
    vec.reset(seed=0)
    batch = np.stack([np.asarray(action)] * 2)
    with pytest.raises(ValueError, match="Actions are glimpse coordinates, real numbers in \\[-1, 1\\], got dtype"):
        vec.step(batch)
    if batch.dtype.kind in "bc":
        with pytest.raises(ValueError, match="got dtype torch"):
            vec.step(torch.as_tensor(batch))
    assert vec.sim.elapsed.tolist() == [0, 0]


def test_num_envs_true_is_refused(core):
    with pytest.raises(ValueError, match="num_envs must be a positive integer, got True"):
        make_vec(core, True)


def test_nan_actions_are_reported_as_a_diverged_policy(core):
    env = MnistGlimpseEnv(split="test", max_glimpses=3, perception=core)
    env.reset(seed=0)
    with pytest.raises(ValueError, match=re.escape("Action [nan, 0.5] contains NaN or inf: the policy produced NaN")):
        env.step(np.array([np.nan, 0.5], dtype=np.float32))
    vec = make_vec(core, 3)
    vec.reset(seed=0)
    with pytest.raises(ValueError, match=r"NaN or inf in 3 of 3 rows .*: the policy produced NaN or inf \(a diverged"):
        vec.step(np.full((3, 2), np.nan, dtype=np.float32))
