"""envs.perception: the core's computation, checkpoints and their errors."""

from __future__ import annotations

import copy
from dataclasses import asdict

import pytest
import torch
from torch import nn

from envs.data import NUM_CLASSES
from envs.perception import (
    CHECKPOINT_FORMAT,
    PRETRAINED_PATH,
    RANDOM_GLIMPSES_PATH,
    PerceptionConfig,
    PerceptionCore,
    load_pretrained,
    perception_loss,
)
from envs.sampler import pixel_to_action

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def recorded_glimpses(batch: int, steps: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    coords = torch.rand(batch, steps, 2, generator=generator) * 27
    values = torch.rand(batch, steps, generator=generator)
    return coords, values


def test_sizes(make_core):
    core = make_core(0)
    assert core.config == PerceptionConfig(channels=32, n_bins=4, hidden=128)
    assert core.histogram_size == 128 and core.observation_size == 138
    small = make_core(0, PerceptionConfig(channels=5, n_bins=3, hidden=7))
    assert small.histogram_size == 15 and small.observation_size == 15 + NUM_CLASSES
    assert small.initial_histogram(4).shape == (4, 15)
    assert not small.initial_histogram(4).any()
    assert small(small.initial_histogram(4)).shape == (4, NUM_CLASSES)


def test_observation_without_logits_is_uniform(core):
    histogram = torch.rand(3, core.histogram_size)
    observation = core.observation(histogram)
    assert observation.shape == (3, core.observation_size)
    assert torch.equal(observation[:, : core.histogram_size], histogram)
    assert torch.equal(observation[:, core.histogram_size :], torch.full((3, 10), 0.1))


def test_observation_with_logits_is_softmax(core):
    histogram = torch.rand(2, core.histogram_size)
    logits = torch.randn(2, 10, generator=torch.Generator().manual_seed(1))
    observation = core.observation(histogram, logits)
    torch.testing.assert_close(observation[:, core.histogram_size :], torch.softmax(logits, -1), rtol=0.0, atol=0.0)
    torch.testing.assert_close(observation[:, core.histogram_size :].sum(-1), torch.ones(2))


def test_observe_feeds_normalised_coordinates_and_value(core):
    histogram = core.initial_histogram(4)
    coords = torch.tensor([[0.0, 27.0], [13.5, 13.5], [27.0, 0.0], [5.0, 20.0]])
    values = torch.tensor([0.0, 0.5, 1.0, 0.25])
    features = torch.cat([pixel_to_action(coords), values[:, None]], -1)
    assert features[:3, :2].tolist() == [[-1.0, 1.0], [0.0, 0.0], [1.0, -1.0]]
    expected = histogram + core.rso.increment(histogram, features)
    torch.testing.assert_close(core.observe(histogram, coords, values), expected, rtol=0.0, atol=0.0)


def test_replay_equals_stepping_observe(core):
    coords, values = recorded_glimpses(5, 6, 2)
    logits = core.replay(coords, values)
    assert logits.shape == (6, 5, NUM_CLASSES)
    histogram = core.initial_histogram(5)
    for step in range(6):
        histogram = core.observe(histogram, coords[:, step], values[:, step])
        torch.testing.assert_close(logits[step], core(histogram), rtol=0.0, atol=0.0)


def test_replay_rows_are_independent(core):
    coords, values = recorded_glimpses(4, 3, 3)
    together = core.replay(coords, values)
    for b in range(4):
        torch.testing.assert_close(
            together[:, b], core.replay(coords[b : b + 1], values[b : b + 1])[:, 0], rtol=1e-5, atol=1e-5
        )


def test_perception_loss_is_mean_cross_entropy_over_glimpses(core):
    coords, values = recorded_glimpses(4, 5, 4)
    labels = torch.tensor([3, 1, 4, 1])
    logits = core.replay(coords, values)
    manual = torch.stack([nn.functional.cross_entropy(logits[t], labels) for t in range(5)]).mean()
    torch.testing.assert_close(perception_loss(logits, labels), manual, rtol=1e-6, atol=1e-6)
    perception_loss(logits, labels).backward()
    assert all(parameter.grad is not None for parameter in core.parameters())


def test_save_load_round_trip(make_core, tmp_path):
    core = make_core(5, PerceptionConfig(channels=6, n_bins=3, hidden=16))
    path = tmp_path / "core.pt"
    core.save(path, step=123, note="hello")
    checkpoint = torch.load(path, weights_only=True)
    assert checkpoint["format"] == CHECKPOINT_FORMAT
    assert checkpoint["config"] == {
        "channels": 6,
        "n_bins": 3,
        "hidden": 16,
        "encoding": "plain",
        "head_layers": 1,
        "dropout": 0.0,
    }
    assert checkpoint["step"] == 123 and checkpoint["note"] == "hello"
    loaded = PerceptionCore.load(path)
    assert loaded is not core and loaded.config == core.config
    assert loaded.state_dict().keys() == core.state_dict().keys()
    for key, value in core.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key
    coords, values = recorded_glimpses(3, 4, 6)
    assert torch.equal(loaded.replay(coords, values), core.replay(coords, values))


def test_save_load_default_config_and_str_path(core, tmp_path):
    path = tmp_path / "default.pt"
    core.save(str(path))
    loaded = PerceptionCore.load(str(path), "cpu")
    coords, values = recorded_glimpses(2, 3, 7)
    assert torch.equal(loaded.replay(coords, values), core.replay(coords, values))


def test_load_onto_cpu(core, tmp_path):
    path = tmp_path / "core.pt"
    core.save(path)
    for device in ("cpu", torch.device("cpu")):
        loaded = PerceptionCore.load(path, device)
        assert {p.device.type for p in loaded.parameters()} == {"cpu"}


@cuda
def test_cuda_checkpoint_loads_on_cpu_and_back(make_core, tmp_path):
    core = make_core(8, device="cuda")
    path = tmp_path / "cuda.pt"
    core.save(path)
    # tensors are written on the CPU, so the file loads without CUDA too
    raw = torch.load(path, map_location="cpu", weights_only=True)
    assert all(value.device.type == "cpu" for value in raw["state_dict"].values())
    on_cpu = PerceptionCore.load(path, "cpu")
    assert {p.device.type for p in on_cpu.parameters()} == {"cpu"}
    on_cuda = PerceptionCore.load(path, "cuda")
    assert {p.device.type for p in on_cuda.parameters()} == {"cuda"}
    coords, values = recorded_glimpses(3, 4, 9)
    torch.testing.assert_close(
        on_cuda.replay(coords.cuda(), values.cuda()).cpu(), on_cpu.replay(coords, values), rtol=1e-4, atol=1e-4
    )
    # a checkpoint whose tensors were saved on the GPU also loads onto the CPU (map_location)
    torch.save({"format": CHECKPOINT_FORMAT, "config": asdict(core.config), "state_dict": core.state_dict()}, path)
    assert {p.device.type for p in PerceptionCore.load(path, "cpu").parameters()} == {"cpu"}


def write_text(path, text):
    path.write_text(text)


def write_empty(path):
    path.write_bytes(b"")


@pytest.mark.parametrize(
    "write",
    [
        pytest.param(lambda p: torch.save([1, 2, 3], p), id="pickled-list"),
        pytest.param(lambda p: torch.save({"weights": torch.zeros(3)}, p), id="other-dict"),
        pytest.param(lambda p: torch.save(PerceptionCore().state_dict(), p), id="bare-state-dict"),
        pytest.param(
            lambda p: torch.save({"format": "something/else/v9", "config": {}, "state_dict": {}}, p), id="other-format"
        ),
        pytest.param(lambda p: write_text(p, "hello, not a checkpoint\n"), id="text-file"),
        pytest.param(write_empty, id="empty-file"),
    ],
)
def test_not_a_checkpoint_raises_value_error_with_fix(tmp_path, write):
    path = tmp_path / "not_a_core.pt"
    write(path)
    with pytest.raises(ValueError) as error:
        PerceptionCore.load(path)
    message = str(error.value)
    assert str(path) in message
    assert "not a perception-core checkpoint" in message
    assert "PerceptionCore.save" in message


def test_mismatched_shapes_raise_value_error_with_fix(make_core, tmp_path):
    small = make_core(0, PerceptionConfig(channels=8, n_bins=2, hidden=16))
    path = tmp_path / "mismatch.pt"
    # a checkpoint that claims the default config but holds another config's tensors
    torch.save(
        {"format": CHECKPOINT_FORMAT, "config": asdict(PerceptionConfig()), "state_dict": small.state_dict()}, path
    )
    with pytest.raises(ValueError) as error:
        PerceptionCore.load(path)
    message = str(error.value)
    assert str(path) in message
    assert "does not match" in message
    assert "Retrain" in message and "train/" in message


def test_missing_state_entries_raise_value_error(core, tmp_path):
    state = core.state_dict()
    del state["head.net.2.bias"]
    path = tmp_path / "partial.pt"
    torch.save({"format": CHECKPOINT_FORMAT, "config": asdict(core.config), "state_dict": state}, path)
    with pytest.raises(ValueError, match="does not match"):
        PerceptionCore.load(path)


def test_unknown_config_raises_value_error(core, tmp_path):
    path = tmp_path / "config.pt"
    config = {**asdict(core.config), "depth": 3}
    torch.save({"format": CHECKPOINT_FORMAT, "config": config, "state_dict": core.state_dict()}, path)
    with pytest.raises(ValueError, match="unknown perception config"):
        PerceptionCore.load(path)


def test_missing_path_raises_file_not_found_with_fix(tmp_path):
    path = tmp_path / "nowhere" / "core.pt"
    with pytest.raises(FileNotFoundError) as error:
        PerceptionCore.load(path)
    message = str(error.value)
    assert str(path) in message
    assert "perception=None" in message and "PerceptionCore.save" in message
    with pytest.raises(FileNotFoundError):
        PerceptionCore.load(tmp_path)  # a folder is not a checkpoint file


def test_from_checkpoint_builds_equal_core(core):
    checkpoint = {"format": CHECKPOINT_FORMAT, "config": asdict(core.config), "state_dict": core.state_dict()}
    rebuilt = PerceptionCore.from_checkpoint(copy.deepcopy(checkpoint))
    coords, values = recorded_glimpses(2, 2, 10)
    assert torch.equal(rebuilt.replay(coords, values), core.replay(coords, values))
    with pytest.raises(ValueError, match="my-source is not a perception-core checkpoint"):
        PerceptionCore.from_checkpoint("nope", source="my-source")


def test_packaged_core_loads_in_eval_mode():
    assert PRETRAINED_PATH.is_file()
    packaged = load_pretrained()
    assert isinstance(packaged, PerceptionCore)
    assert not packaged.training
    assert {p.device.type for p in packaged.parameters()} == {"cpu"}
    assert packaged.observation_size == packaged.histogram_size + NUM_CLASSES
    coords, values = recorded_glimpses(2, 3, 11)
    logits = packaged.replay(coords, values)
    assert logits.shape == (3, 2, NUM_CLASSES) and bool(torch.isfinite(logits).all())
    # not shared between calls: each caller gets its own instance
    assert load_pretrained() is not packaged


def test_glimpse_encodings():
    from envs.perception import GlimpseEncoding

    positions = torch.tensor([[-1.0, 0.5], [0.25, 1.0]])
    values = torch.tensor([0.0, 1.0])
    assert torch.equal(GlimpseEncoding("plain")(positions, values), torch.tensor([[-1.0, 0.5, 0.0], [0.25, 1.0, 1.0]]))
    fourier = GlimpseEncoding("fourier")
    features = fourier(positions, values)
    assert features.shape == (2, fourier.features) == (2, 35)
    assert torch.equal(features[:, :2], positions) and torch.equal(features[:, -1], values)  # value last
    ink, background = features[:, 2:18], features[:, 18:34]
    assert (ink[0] == 0).all() and (background[1] == 0).all()  # each half gated by ink or by background
    k = torch.arange(1, 5) * torch.pi / 2
    assert torch.allclose(background[0, :4], torch.sin(k * -1.0)) and torch.allclose(ink[1, 12:], torch.cos(k * 1.0))
    with pytest.raises(ValueError, match="Unknown glimpse encoding 'polar'"):
        PerceptionConfig(encoding="polar")


def test_fourier_core_round_trip_and_old_checkpoints_read_as_plain(tmp_path, make_core):
    core = make_core(2, PerceptionConfig(channels=6, n_bins=3, hidden=16, encoding="fourier"))
    assert core.rso.linear.in_features == 35 + 18 and core.histogram_size == 18
    coords, values = recorded_glimpses(4, 5, seed=1)
    core.save(tmp_path / "fourier.pt")
    loaded = PerceptionCore.load(tmp_path / "fourier.pt")
    assert loaded.config.encoding == "fourier" and torch.equal(
        loaded.replay(coords, values), core.replay(coords, values)
    )
    # a checkpoint config without an "encoding" key (like the random-glimpses core's) reads as plain
    assert "encoding" not in torch.load(RANDOM_GLIMPSES_PATH, weights_only=True)["config"]
    assert PerceptionCore.load(RANDOM_GLIMPSES_PATH).config.encoding == "plain"


def test_learned_encoding_starts_as_fourier_at_pixel_centres_and_interpolates():
    from envs.perception import GlimpseEncoding
    from envs.sampler import pixel_to_action

    learned, fourier = GlimpseEncoding("learned"), GlimpseEncoding("fourier")
    assert learned.features == fourier.features == 35 and learned.location_map.shape == (784, 16)
    centres = pixel_to_action(torch.tensor([[0.0, 0.0], [27.0, 27.0], [13.0, 5.0], [27.0, 0.0]]))
    values = torch.tensor([1.0, 0.0, 0.3, 1.0])
    torch.testing.assert_close(learned(centres, values), fourier(centres, values), atol=1e-6, rtol=0)
    # between centres: bilinear in the table, so the midpoint of two pixels is their mean
    with torch.no_grad():
        learned.location_map.normal_()
    a, b = torch.tensor([[4.0, 7.0]]), torch.tensor([[4.0, 8.0]])

    def phi(coords):  # the ink-gated features
        return learned(pixel_to_action(coords), torch.ones(1))[:, 2:18]

    torch.testing.assert_close(phi((a + b) / 2), (phi(a) + phi(b)) / 2)
    # the location gets a gradient in flat background too (value 0), unlike a bilinear read of the image
    position = pixel_to_action(torch.tensor([[2.3, 3.6]])).requires_grad_()
    (grad,) = torch.autograd.grad(learned(position, torch.zeros(1)).sum(), position)
    assert bool((grad != 0).all())


def test_learned_core_round_trip(tmp_path, make_core):
    core = make_core(3, PerceptionConfig(channels=6, n_bins=3, hidden=16, encoding="learned"))
    with torch.no_grad():
        core.encoding.location_map.add_(1.0)
    coords, values = recorded_glimpses(4, 5, seed=2)
    core.save(tmp_path / "learned.pt")
    loaded = PerceptionCore.load(tmp_path / "learned.pt")
    assert torch.equal(loaded.encoding.location_map, core.encoding.location_map)
    assert torch.equal(loaded.replay(coords, values), core.replay(coords, values))


def test_embedding_encoding_is_as_wide_as_the_channels_and_exact_at_pixel_centres(make_core, tmp_path):
    from envs.perception import GlimpseEncoding
    from envs.sampler import pixel_centres, pixel_to_action

    core = make_core(4, PerceptionConfig(channels=8, n_bins=2, hidden=16, encoding="embedding"))
    table = core.encoding.location_map
    assert table.shape == (784, 8) and core.encoding.features == 3 + 2 * 8
    # at a pixel centre the features are [i, j, v E_p, (1 - v) E_p, v] with E_p the pixel's row
    centres = pixel_centres()[[0, 100, 783]]
    values = torch.tensor([0.0, 0.4, 1.0])
    features = core.encoding(pixel_to_action(centres), values)
    rows = table[[0, 100, 783]]
    torch.testing.assert_close(features[:, 2:10], values[:, None] * rows)
    torch.testing.assert_close(features[:, 10:18], (1 - values[:, None]) * rows)
    # the core trains, saves and loads like any other
    coords, values = recorded_glimpses(3, 4, seed=3)
    core.save(tmp_path / "embedding.pt")
    assert torch.equal(
        PerceptionCore.load(tmp_path / "embedding.pt").replay(coords, values), core.replay(coords, values)
    )
    with pytest.raises(ValueError, match="needs a positive width"):
        GlimpseEncoding("embedding")
    with pytest.raises(ValueError, match="take none"):
        GlimpseEncoding("learned", 8)


def test_head_layers_and_dropout(make_core):
    core = make_core(0, PerceptionConfig(channels=4, n_bins=2, hidden=16, head_layers=2, dropout=0.3))
    layers = [type(m).__name__ for m in core.head.net]
    assert layers == ["Linear", "ReLU", "Dropout", "Linear", "ReLU", "Dropout", "Linear"]
    histogram = torch.rand(5, core.histogram_size)
    core.eval()
    assert torch.equal(core(histogram), core(histogram))  # dropout only in train mode
    # the default head keeps the packaged core's layout (its state_dict keys)
    assert [type(m).__name__ for m in make_core(0).head.net] == ["Linear", "ReLU", "Linear"]
    for bad in (dict(dropout=1.0), dict(head_layers=0), dict(channels=0), dict(n_bins=2.5)):
        with pytest.raises(ValueError, match="PerceptionConfig"):
            PerceptionConfig(**bad)


def test_the_shipped_agent_runs_on_its_own_core():
    """The shipped agent carries its core: the file ENV_KWARGS passes holds the weights inside agent.pt,
    and the environment's packaged core is another (the general one)."""
    from agents.shipped import ENV_KWARGS, load_shipped_agent
    from envs.perception import SHIPPED_AGENT_CORE_PATH

    _, core, _ = load_shipped_agent()
    assert ENV_KWARGS["perception"] == str(SHIPPED_AGENT_CORE_PATH)
    own = PerceptionCore.load(SHIPPED_AGENT_CORE_PATH)
    assert own.config == core.config
    assert own.state_dict().keys() == core.state_dict().keys()
    assert all(torch.equal(own.state_dict()[k], v) for k, v in core.state_dict().items())
    packaged = load_pretrained()
    assert any(not torch.equal(packaged.state_dict()[k], v) for k, v in core.state_dict().items())


def test_the_packaged_core_reads_in_any_order():
    """The general core is trained in set form: its weights on the state are zero, so the order of the
    glimpses does not change what it predicts."""
    packaged = load_pretrained()
    assert not packaged.rso.linear.weight[:, packaged.encoding.features :].any()
    coords, values = recorded_glimpses(4, 12, 5)
    order = torch.randperm(12, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(
        packaged.replay(coords, values)[-1], packaged.replay(coords[:, order], values[:, order])[-1]
    )


def test_the_32x4_core_is_packaged_and_checked():
    """Agents trained on the 32x4 core that the environment packaged before run with it."""
    from envs.perception import CORE_32X4_PATH

    core = PerceptionCore.load(CORE_32X4_PATH)
    assert (core.config.channels, core.config.n_bins, core.config.encoding) == (32, 4, "plain")
    assert core.observation_size == 138


def test_the_shared_core_is_read_only():
    """The shared packaged core is handed out only unchanged; a user who changed it is told to take a copy."""
    from envs import perception

    perception.clear_pretrained_cache()
    shared = load_pretrained(shared=True)
    assert load_pretrained(shared=True) is shared and not shared.training
    assert not any(p.requires_grad for p in shared.parameters())
    own = load_pretrained()
    assert own is not shared and all(p.requires_grad for p in own.parameters())
    for change, message in (
        (lambda core: core.train(), "it is in train mode"),
        (lambda core: core.requires_grad_(True), "its parameters require gradients"),
        (lambda core: core.head.net[0].bias.data.add_(1.0), "its weights were written"),
    ):
        perception.clear_pretrained_cache()
        change(load_pretrained(shared=True))
        with pytest.raises(
            RuntimeError, match=f"shared packaged core on cpu was changed in this process \\({message}\\)"
        ):
            load_pretrained(shared=True)
    perception.clear_pretrained_cache()
    assert load_pretrained(shared=True).training is False  # read again from the file
