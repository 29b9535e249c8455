"""agents.pretrain: the core's warm starts, on random glimpses and in set form on exact pixels."""

from __future__ import annotations

import pytest
import torch

from agents.pretrain import pretrain_core_on_pixels
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
    torch.testing.assert_close(core.prefix_logits(coords, values), core.replay(coords, values))
    with torch.no_grad():
        core.rso.linear.weight[:, core.encoding.features :].normal_(std=0.1)
    assert not torch.allclose(core.prefix_logits(coords, values), core.replay(coords, values))


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

    core = make_core(2, PerceptionConfig(channels=6, n_bins=3, hidden=16, encoding=encoding))
    images = test_split.images[:4].flatten(1).float() / 255.0
    generator = torch.Generator().manual_seed(0)
    mask = torch.rand(4, 784, generator=generator) < torch.tensor([[0.01], [0.05], [0.3], [0.0]])
    logits = core.mask_logits(images, mask)
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
        core.mask_logits(images, mask)


def test_general_sources_read_what_their_policy_would(make_core, test_split):
    """Each glimpse set of the general mixture is what the environment computes for that policy:
    continuous glimpses read with their sampler, pixels at their centres, prefixes that are replays."""
    from agents.pretrain import GENERAL_SOURCES, general_logits, repeated_coords
    from envs.sampler import Sampler

    core = make_core(3, PerceptionConfig(channels=6, n_bins=3, hidden=16, encoding="learned"))
    images = test_split.images[:5].flatten(1).float() / 255.0
    for source in ("continuous-bilinear", "continuous-nearest"):
        torch.manual_seed(1)
        logits = general_logits(core, source, images, 7)
        torch.manual_seed(1)
        coords = torch.rand(5, 7, 2) * 27
        sampler = Sampler(source.removeprefix("continuous-"))
        values = torch.stack([sampler(images.view(5, 28, 28), coords[:, t]) for t in range(7)], 1)
        torch.testing.assert_close(logits, core.replay(coords, values), atol=1e-5, rtol=1e-5)
    torch.manual_seed(2)
    logits = general_logits(core, "pixels", images, 9)
    torch.manual_seed(2)
    chosen = torch.rand(5, 784).argsort(dim=1)[:, :9]
    assert logits.shape == (9, 5, 10) and chosen.unique(dim=1).shape[1] == 9
    torch.testing.assert_close(logits, core.replay(pixel_centres()[chosen], images.gather(1, chosen)))
    coords, values = pixel_centres()[chosen], images.gather(1, chosen)
    scored = torch.tensor([8, 0, 3])
    part = general_logits(core, "trajectories", images, 9, (coords, values), scored)
    torch.testing.assert_close(part, core.replay(coords, values)[scored])
    assert general_logits(core, "uniform-masks", images, 9).shape == (1, 5, 10)
    assert set(GENERAL_SOURCES) == {
        "continuous-bilinear",
        "continuous-nearest",
        "pixels",
        "uniform-masks",
        "trajectories",
        "repeats",
    }
    torch.manual_seed(3)
    logits = general_logits(core, "repeats", images, 12)
    torch.manual_seed(3)
    coords = repeated_coords(5, 12, "cpu")
    values = torch.stack([Sampler("bilinear")(images.view(5, 28, 28), coords[:, t]) for t in range(12)], 1)
    torch.testing.assert_close(logits, core.replay(coords, values), atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="Unknown glimpse source 'grid'"):
        general_logits(core, "grid", images, 9)
    with pytest.raises(ValueError, match="needs recorded glimpses"):
        general_logits(core, "trajectories", images, 9)


def test_repeated_coords_settle_on_a_few_places():
    """Each set is uniform up to its own glimpse c, then goes back to at most 3 places, all in the image."""
    from agents.pretrain import MAX_REPEATED_PLACES, repeated_coords

    torch.manual_seed(0)
    coords = repeated_coords(2000, 25, "cpu")
    assert coords.shape == (2000, 25, 2) and coords.min() >= 0 and coords.max() <= 27
    twin = (coords[:, :, None] == coords[:, None]).all(-1).sum(-1) > 1  # (B, L): a glimpse with a twin in its set
    places = [len(torch.unique(row[mask], dim=0)) for row, mask in zip(coords[:100], twin[:100])]
    assert max(places) == MAX_REPEATED_PLACES  # random floats never meet: the twins are the settled places
    assert twin[:, -1].float().mean() > 0.8  # most sets end settled
    assert twin.float().argmax(1)[twin.any(1)].float().std() > 3  # the settling point varies from set to set


def test_general_pretraining_keeps_the_best_validation_point(make_core, test_split):
    """Early stopping: the core ends at the weights of its lowest validation loss, still order-free."""
    from agents.pretrain import pretrain_core_general, validate_general
    from envs.data import MnistSplit

    core = make_core(4, PerceptionConfig(channels=6, n_bins=3, hidden=16, encoding="learned"))
    train = MnistSplit(test_split.images[:2000], test_split.labels[:2000])
    validation = MnistSplit(test_split.images[2000:2200], test_split.labels[2000:2200])
    sources = {"continuous-nearest": 1.0, "pixels": 1.0, "uniform-masks": 0.5}
    torch.manual_seed(0)
    history = pretrain_core_general(core, train, validation, sources, 40, batch_size=48, length=10, eval_every=10)
    assert [point.step for point in history] == [10, 20, 30, 40]
    assert history[-1].loss < history[0].loss  # it learns
    best = min(history, key=lambda point: point.loss)
    images = validation.images.flatten(1).float() / 255.0
    loss, accuracy = validate_general(core, sources, images, validation.labels, 10)
    assert loss == pytest.approx(best.loss) and accuracy == pytest.approx(best.accuracy)
    assert not core.rso.linear.weight[:, core.encoding.features :].any() and not core.training
    # patience 1: stops at the first validation that is not a new best
    worse = {"pixels": 1.0}
    history = pretrain_core_general(
        make_core(5, core.config),
        train,
        validation,
        worse,
        1000,
        batch_size=16,
        length=5,
        learning_rate=1.0,
        eval_every=1,
        patience=1,
    )
    assert len(history) < 1000 and history[-1].loss >= min(point.loss for point in history[:-1])
    for bad, match in (
        ({"grid": 1.0}, "sources among"),
        ({"pixels": -1.0, "uniform-masks": 1.0}, ">= 0"),
        ({"trajectories": 1.0}, "needs trajectories"),
    ):
        with pytest.raises(ValueError, match=match):
            pretrain_core_general(make_core(5, core.config), train, validation, bad, 1)
    with pytest.raises(ValueError, match="lr_decay must be one of"):
        pretrain_core_general(make_core(5, core.config), train, validation, worse, 1, lr_decay="linear")


def test_cosine_decay_ends_at_zero_and_constant_changes_nothing():
    """The general recipe's schedules: half a cosine from the full rate to zero at the last step."""
    from agents.pretrain import LR_DECAYS

    cosine, constant = LR_DECAYS["cosine"], LR_DECAYS["constant"]
    assert [cosine(done, 100) for done in (0, 50, 100, 150)] == pytest.approx([1.0, 0.5, 0.0, 0.0])
    assert all(cosine(done, 100) >= cosine(done + 1, 100) for done in range(100))
    assert {constant(done, 100) for done in range(0, 200, 7)} == {1.0}


def test_trajectory_agents_take_the_images_in_turn(tmp_path):
    import importlib

    from agents.cli import UserError
    from agents.evaluation import agent_glimpses
    from agents.shipped import load_shipped_agent

    script = importlib.import_module("train.pretrain_perception")
    images = load_mnist("test").images[:6]
    policy, core, _ = load_shipped_agent()
    alone = agent_glimpses(policy, core, 5, images)
    # the same agent twice: images 0, 2, 4 and 1, 3, 5 read by one each, the same glimpses as one agent on all
    coords, values = script.agents_glimpses(("shipped", "shipped"), 5, images, torch.device("cpu"))
    assert torch.equal(coords, alone[0]) and torch.equal(values, alone[1])
    with pytest.raises(UserError, match="not found"):
        script.agents_glimpses(("shipped", str(tmp_path / "none.pt")), 5, images, torch.device("cpu"))
    with pytest.raises(UserError, match="--trajectory-agents is empty"):
        script.agents_glimpses((), 5, images, torch.device("cpu"))


def test_general_only_options_are_refused_on_the_random_glimpses_preset():
    import importlib

    from agents.cli import UserError

    script = importlib.import_module("train.pretrain_perception")
    script.check_args(script.parse_args(["--preset", "general", "--lr-decay", "cosine"]))
    for flags in (["--lr-decay", "cosine"], ["--sources", "pixels"]):
        with pytest.raises(UserError, match="--sources and --lr-decay are options of --preset general"):
            script.check_args(script.parse_args(flags))
