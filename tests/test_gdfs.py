"""GDFS (agents.gdfs, train/gdfs.py): the networks' shapes, selections that never read a pixel twice,
the two stages in order with their best weights restored, the environment's evaluation, a tiny run
with its curve, --resume to the uninterrupted result, and a user's mistakes."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch

import train.gdfs as script
from agents.gdfs import (
    NUM_PIXELS,
    GdfsAgent,
    MaskedMLP,
    PixelSelector,
    accuracy_by_glimpse,
    accuracy_in_env,
    gumbel_choice,
    load_gdfs,
    random_masks,
    save_gdfs,
    selector_step,
    validate_selection,
)
from envs.data import load_mnist


@pytest.fixture(autouse=True)
def one_thread():
    """One torch thread, as the script runs (small networks are slower on threads that share a busy CPU)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def small_nets(seed: int = 0, hidden: int = 16) -> tuple[PixelSelector, MaskedMLP]:
    torch.manual_seed(seed)
    return PixelSelector(hidden), MaskedMLP(10, hidden)


@pytest.fixture(scope="module")
def batch() -> tuple[torch.Tensor, torch.Tensor]:
    data = load_mnist("train")
    return data.images[:32].flatten(1).float() / 255.0, data.labels[:32]


def tiny_args(out, **extra) -> script.Args:
    """Two batches of 64 per epoch, one epoch per stage, 3 temperatures, small networks."""
    settings = dict(
        max_glimpses=4,
        batch_size=64,
        mlp_hidden=16,
        temperature_stages=3,
        max_epochs=1,
        train_images=128,
        val_images=64,
        eval_images=40,
        curve_images=20,
        device="cpu",
        out=str(out),
    )
    return dataclasses.replace(script.Args(), **{**settings, **extra})


def test_shapes_and_the_masked_input(batch):
    selector, predictor = small_nets()
    images, _ = batch
    mask = random_masks(images.shape[0], "cpu")
    assert predictor(images, mask).shape == (32, 10) and selector(images, mask).shape == (32, NUM_PIXELS)
    assert predictor.net[0].in_features == 2 * NUM_PIXELS and MaskedMLP().net[0].out_features == 512
    predictor.eval()
    # Only the pixels read reach the networks: unread pixels changed change nothing.
    other = torch.where(mask > 0, images, torch.rand_like(images))
    assert torch.equal(predictor(images, mask), predictor(other, mask))
    with pytest.raises(ValueError, match="flatten"):
        predictor(images.view(-1, 28, 28), mask.view(-1, 28, 28))
    # Random masks: every size about as likely (rows from nearly empty to nearly full).
    sizes = random_masks(4000, "cpu", torch.Generator().manual_seed(0)).sum(dim=1)
    assert sizes.min() < 40 and sizes.max() > 744 and abs(float(sizes.mean()) - NUM_PIXELS / 2) < 15


def test_selections_never_read_a_pixel_twice(batch):
    selector, predictor = small_nets()
    images, _ = batch
    mask = images.new_zeros(images.shape)
    rows = torch.arange(images.shape[0])
    for _ in range(60):  # argmax: one new pixel per row per step
        mask[rows, selector.choose(images, mask)] += 1.0
    assert mask.max() == 1 and torch.equal(mask.sum(dim=1), torch.full((32,), 60.0))
    mask = images.new_zeros(images.shape)
    for _ in range(60):  # the training draws (Gumbel-max among unread pixels)
        mask = mask + gumbel_choice(selector(images, mask), mask)
    assert mask.max() == 1 and torch.equal(mask.sum(dim=1), torch.full((32,), 60.0))
    # The environment adapter acts on the record: no read pixel either.
    agent = GdfsAgent(selector, predictor)
    observation = {"mask": mask, "pixels": images * mask}
    assert not mask[rows, agent.choose(observation, 60)].any()
    with pytest.raises(ValueError, match="obs_type='record'"):
        agent.choose(images, 0)


def test_selector_step_trains_both_networks_and_validation_is_finite(batch):
    selector, predictor = small_nets()
    images, labels = batch
    before = [p.detach().clone() for p in (*selector.parameters(), *predictor.parameters())]
    optimizer = torch.optim.Adam([*selector.parameters(), *predictor.parameters()], lr=1e-3)
    loss = selector_step(selector, predictor, optimizer, images, labels, max_glimpses=5, temperature=1.0)
    after = list((*selector.parameters(), *predictor.parameters()))
    assert loss > 0 and all(not torch.equal(a, b) for a, b in zip(before, after))
    soft, hard = validate_selection(selector, predictor, images, labels, max_glimpses=5, temperature=0.5)
    assert 0 < soft < 10 and 0 < hard < 10 and selector.training and predictor.training


def test_the_environment_gives_the_direct_rollouts_accuracy():
    """Acting in the env on the record gives what the direct rollout gives (the record's pixels are x * m)."""
    selector, predictor = small_nets(3)
    test = load_mnist("test")
    direct = accuracy_by_glimpse(selector, predictor, test.images[:50].flatten(1).float() / 255.0, test.labels[:50], 6)
    own, core = accuracy_in_env(GdfsAgent(selector, predictor), 6, limit=50)
    assert torch.equal(direct, own) and core.shape == (6,)


def test_checkpoint_round_trip_and_a_changed_file_is_refused(tmp_path):
    selector, predictor = small_nets()
    save_gdfs(tmp_path / "gdfs.pt", selector, predictor, run_id="x")
    agent, saved = load_gdfs(tmp_path / "gdfs.pt")
    assert saved["run_id"] == "x" and torch.equal(agent.predictor.net[0].weight, predictor.net[0].weight)
    saved["predictor"]["net.0.bias"][0] += 1.0
    torch.save(saved, tmp_path / "changed.pt")
    with pytest.raises(ValueError, match="digest"):
        load_gdfs(tmp_path / "changed.pt")
    torch.save({"format": "other"}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="not a GDFS checkpoint"):
        load_gdfs(tmp_path / "other.pt")


def test_curve_milestones_are_log_spaced():
    from run import curve_milestones

    assert curve_milestones(1000) == [1, 2, 5, 10, 20, 50, 100, 200, 500, 1000] and curve_milestones(7) == [1, 2, 5]


def test_a_peaked_concrete_sample_is_drawn():
    """Scores that put almost all the mass on one pixel (a float32 softmax then misses the simplex
    check of torch's distribution by more than its tolerance) still give a sample."""
    from agents.gdfs import concrete_sample

    torch.manual_seed(0)
    logits = torch.randn(128, NUM_PIXELS) * 60.0
    sample = concrete_sample(logits, 0.1)
    assert sample.shape == (128, NUM_PIXELS) and torch.allclose(sample.sum(dim=1), torch.ones(128), atol=1e-4)


def test_a_tiny_run_writes_metrics_with_the_stages_in_order_and_the_curve(tmp_path):
    metrics = script.main(tiny_args(tmp_path / "run"))
    written = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert written == metrics and (tmp_path / "run" / "gdfs.pt").is_file()
    assert list(metrics["test_accuracy"]) == ["1", "2", "5", "10", "25"]
    assert list(metrics["test_accuracy_env_core"]) == ["1", "2", "5", "10", "25"]
    assert (
        metrics["predictor_steps"] == 2 and metrics["optimizer_steps"] == 6 and metrics["epochs_per_stage"] == [1] * 4
    )
    stages = [entry["stage"] for entry in metrics["validation"]]
    assert stages == [0, 1, 2, 3] and "hard_loss" not in metrics["validation"][0]
    assert [entry["temperature"] for entry in metrics["validation"][1:]] == pytest.approx([1.0, 0.31623, 0.1])
    # The final weights are the stage-2 validation with the lowest hard-selection loss.
    hard = [entry["hard_loss"] for entry in metrics["validation"][1:]]
    assert metrics["best"]["hard_loss"] == min(hard) and metrics["best"]["stage"] == 1 + hard.index(min(hard))
    # The curve: step 0 (after stage 1), the milestones 1, 2, 5, then the last step.
    assert [point["step"] for point in metrics["curve"]] == [0, 1, 2, 5, 6]
    assert all(list(point["accuracy"]) == ["5", "10", "25"] for point in metrics["curve"])
    seconds = [point["seconds"] for point in metrics["curve"]]
    assert seconds == sorted(seconds)


def test_stages_end_on_their_best_weights_and_the_run_on_the_best_hard_loss(tmp_path, monkeypatch):
    """Validation losses scripted: a stage that gets worse ends on its best epoch's weights, and the
    run ends on the weights of the best hard-selection loss over all stages."""
    losses = iter([(2.0, 2.0), (1.0, 1.5), *[(3.0, 3.0)] * 4, (0.5, 0.9), *[(3.0, 3.0)] * 4])
    snapshots: list[torch.Tensor] = []

    def fake_validation(selector, predictor, *args):
        snapshots.append(predictor.net[0].bias.detach().clone())
        return next(losses)

    starts: list[torch.Tensor] = []  # the predictor's bias before each stage-2 optimizer step
    real_step = script.selector_step

    def recording_step(selector, predictor, *args):
        starts.append(predictor.net[0].bias.detach().clone())
        return real_step(selector, predictor, *args)

    monkeypatch.setattr(script, "validate_selection", fake_validation)
    monkeypatch.setattr(script, "selector_step", recording_step)
    args = tiny_args(tmp_path / "run", temperature_stages=2, max_epochs=6, early_stop=3)
    metrics = script.main(args)
    # Stage 1: epochs 1-6 (losses 2, 1, 3, 3, 3, 3): more than 3 bad epochs after epoch 2 ends it at epoch 6.
    # Stage 2 starts from epoch 2's weights; its first epoch (hard loss 0.9) is the run's best, and 4 bad
    # epochs after it end it at epoch 5.
    assert metrics["epochs_per_stage"][1:] == [6, 5]
    assert metrics["best"] == {**metrics["best"], "stage": 2, "epoch": 1, "hard_loss": 0.9}
    agent, _ = load_gdfs(tmp_path / "run" / "gdfs.pt")
    assert torch.equal(agent.predictor.net[0].bias, snapshots[6])  # the best hard loss's weights
    # Stage 2 (its first step is the 13th: 2 batches x 6 epochs before it) starts from epoch 2's weights.
    assert len(starts) == 22 and torch.equal(starts[12], snapshots[1]) and not torch.equal(snapshots[1], snapshots[5])


def test_an_interrupted_run_resumes_to_the_uninterrupted_result(tmp_path):
    from run import Interrupted

    whole = script.main(tiny_args(tmp_path / "whole"))
    with pytest.raises(Interrupted):
        script.main(tiny_args(tmp_path / "cut"), stop_after=4)  # in the first temperature's epoch
    assert (tmp_path / "cut" / "resume.pt").is_file() and not (tmp_path / "cut" / "metrics.json").exists()
    with pytest.raises(FileExistsError, match="pass --resume"):
        script.main(tiny_args(tmp_path / "cut"))
    with pytest.raises(ValueError, match=r"other values of \['max_glimpses'\]"):
        script.main(tiny_args(tmp_path / "cut", resume=True, max_glimpses=5))
    cut = script.main(tiny_args(tmp_path / "cut", resume=True))
    assert not (tmp_path / "cut" / "resume.pt").exists()
    for metrics in (whole, cut):
        for entry in [*metrics["validation"], *metrics["curve"]]:
            entry.pop("seconds")
        metrics.pop("train_seconds")
        metrics.pop("run_id")
    assert whole == cut
    first, _ = load_gdfs(tmp_path / "whole" / "gdfs.pt")
    second, _ = load_gdfs(tmp_path / "cut" / "gdfs.pt")
    for (key, value), other in zip(first.state_dict().items(), second.state_dict().values()):
        assert torch.equal(value, other), key


def test_a_time_budget_stops_training_and_still_evaluates(tmp_path):
    metrics = script.main(tiny_args(tmp_path / "run", budget_seconds=1e-9, max_epochs=100))
    assert metrics["stopped"].startswith("time budget") and metrics["optimizer_steps"] == 0
    assert list(metrics["test_accuracy"]) == ["1", "2", "5", "10", "25"]


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (dict(max_glimpses=0), "--max-glimpses must be >= 1"),
        (dict(eval_max_glimpses=785), "--eval-max-glimpses must be <= 784"),
        (dict(val_images=59_990), "fewer than one batch"),
        (dict(train_images=10), "less than one batch"),
        (dict(train_images=60_000), "--train-images must be between 0"),
        (dict(eval_images=0), "--eval-images must be between 1 and 10000"),
        (dict(curve_images=20_000), "--curve-images must be between 0 and 10000"),
        (dict(budget_seconds=-1.0), "--budget-seconds must be >= 0"),
        (dict(pretrain_share=1.0), "--pretrain-share must be in"),
        (dict(factor=2.0), "--factor must be in"),
        (dict(temperature_end=0.0), "--temperature-end must be > 0"),
    ],
)
def test_bad_input_is_refused_before_anything_is_written(tmp_path, flags, message):
    with pytest.raises(ValueError, match=message):
        script.main(tiny_args(tmp_path / "run", **flags))
    assert not (tmp_path / "run").exists()
