"""The differentiable agent: its two optimizers, targets, rollout, checkpoints and scripts."""

from __future__ import annotations

import copy
import json
import math
import re

import pytest
import torch

from agents.attention import AttentionNetwork
from agents.baselines import FixedSequence, RandomGlimpses
from agents.checkpoint import load_agent, save_agent
from agents.differentiable import DualOptimizerTrainer, attention_targets
from agents.evaluation import accuracy_by_glimpse
from agents.pixel_attention import PixelAttention
from agents.rollout import run_episodes
from envs.data import load_mnist
from envs.glimpse_env import MnistGlimpseEnv
from envs.perception import PerceptionCore, perception_loss
from envs.sampler import Sampler
from run import accuracy_table


@pytest.fixture
def batch():
    data = load_mnist("test")
    return data.images[:32].float() / 255.0, data.labels[:32]


def make_agent(seed: int = 0, glimpses: int = 4, step_bias: bool = False):
    torch.manual_seed(seed)
    core = PerceptionCore()
    return AttentionNetwork(core.observation_size, 32, glimpses, step_bias), core


def test_attention_targets():
    logits = torch.tensor([[[0.0, 3.0, 1.0, -2.0], [5.0, 4.0, -1.0, 0.0]]])  # (T=1, B=2, 4)
    labels = torch.tensor([2, 1])
    assert attention_targets(logits, labels, "argmin").tolist() == [[3, 2]]
    assert attention_targets(logits, labels, "second").tolist() == [[2, 1]]
    assert attention_targets(logits, labels, "label").tolist() == [[2, 1]]
    with pytest.raises(ValueError, match="argmin"):
        attention_targets(logits, labels, "max")


@pytest.mark.parametrize("target", ["argmin", "second", "label", "margin", "entropy"])
def test_each_optimizer_steps_only_its_own_parameters(batch, target):
    """Gradients must not leak: each parameter set moves exactly as its own loss alone says."""
    images, labels = batch
    policy, core = make_agent()
    trainer = DualOptimizerTrainer(policy, core, Sampler("bilinear"), 4, attention_target=target)
    perception, attention, _ = trainer.losses(images, labels)
    expected_core = torch.autograd.grad(perception, list(core.parameters()), retain_graph=True)
    expected_policy = torch.autograd.grad(attention, list(policy.parameters()))

    torch.manual_seed(1)  # same rollout again inside step()
    policy2, core2 = make_agent()
    trainer2 = DualOptimizerTrainer(policy2, core2, Sampler("bilinear"), 4, attention_target=target)
    trainer2.step(images, labels)
    for param, grad in zip(core2.parameters(), expected_core):
        torch.testing.assert_close(param.grad, grad)
    for param, grad in zip(policy2.parameters(), expected_policy):
        torch.testing.assert_close(param.grad, grad)
    if target != "label":  # the attention loss differs from the perception loss
        core_from_attention = torch.autograd.grad(
            trainer.losses(images, labels)[1], list(core.parameters()), allow_unused=True
        )
        assert any(g is not None and not torch.allclose(g, e) for g, e in zip(core_from_attention, expected_core))


def test_readout_step_trains_the_core_alone_on_nearest_reads(batch):
    """readout_step: the policy chooses glimpses (untouched, no gradient); the core's gradient is
    the perception loss of re-reading those glimpses with the nearest read-out."""
    images, labels = batch
    policy, core = make_agent(step_bias=True)
    trainer = DualOptimizerTrainer(policy, core, Sampler("bilinear"), 4, attention_target="label")
    nearest = Sampler("nearest")
    with torch.no_grad():
        episode = run_episodes(policy, core, nearest, images, 4)
    assert torch.equal(
        episode.values,
        nearest(images.unsqueeze(0).expand(4, -1, -1, -1).flatten(0, 1), episode.coords.flatten(0, 1)).view(4, -1),
    )  # real pixels
    expected_loss = perception_loss(episode.logits, labels)
    expected = torch.autograd.grad(
        perception_loss(core.replay(episode.coords.transpose(0, 1), episode.values.transpose(0, 1)), labels),
        list(core.parameters()),
    )
    policy_before = copy.deepcopy(policy.state_dict())
    core_before = copy.deepcopy(core.state_dict())

    loss = trainer.readout_step(images, labels, nearest)
    assert math.isclose(loss, float(expected_loss), rel_tol=1e-5)
    for param, grad in zip(core.parameters(), expected):
        torch.testing.assert_close(param.grad, grad)
    assert all(param.grad is None for param in policy.parameters()) and not trainer.attention_optimizer.state
    assert all(torch.equal(policy_before[k], v) for k, v in policy.state_dict().items())
    assert any(not torch.equal(core_before[k], v) for k, v in core.state_dict().items())


def test_training_improves_the_loss(batch):
    images, labels = batch
    policy, core = make_agent(step_bias=True)
    trainer = DualOptimizerTrainer(policy, core, Sampler("bilinear"), 4, attention_target="label", perception_lr=3e-3)
    first = trainer.step(images, labels).perception_loss
    for _ in range(30):
        last = trainer.step(images, labels).perception_loss
    assert last < first - 0.2


@pytest.mark.parametrize("kind", ["fixed", "pixel"])
def test_greedy_credit_trains_each_choice_on_the_next_prediction_only(batch, kind):
    """credit="greedy": the same episode forward; the loss after glimpse t reaches glimpse t's own
    per-step parameters and no earlier glimpse's (with "episode" it reaches the earlier ones too);
    the core still learns through the whole episode."""
    images, labels = batch
    torch.manual_seed(0)
    core = PerceptionCore()
    if kind == "fixed":  # per-glimpse locations theta (T, 2), bilinear reads
        policy, sampler, per_step = FixedSequence(4), Sampler("bilinear"), "theta"
    else:  # per-glimpse pixel scores beta (T, 784), relaxed choice among 8 candidates
        policy, sampler = PixelAttention(core.observation_size, 4, hidden=16, candidates=8).train(), Sampler("nearest")
        torch.nn.init.normal_(policy.beta, std=3.0)
        per_step = "beta"
    episodes, grads, core_grads = {}, {}, {}
    for credit in ("episode", "greedy"):
        torch.manual_seed(1)
        episodes[credit] = run_episodes(policy, core, sampler, images, 4, credit=credit)
        last = perception_loss(episodes[credit].logits[-1:], labels)
        (grads[credit],) = torch.autograd.grad(last, getattr(policy, per_step), retain_graph=True)
        core_grads[credit] = torch.autograd.grad(last, list(core.parameters()))
    episode, greedy = episodes["episode"], episodes["greedy"]
    assert torch.equal(greedy.coords, episode.coords) and torch.equal(greedy.values, episode.values)
    torch.testing.assert_close(greedy.logits, episode.logits)
    assert torch.all(grads["greedy"][:3] == 0) and torch.any(grads["greedy"][3] != 0)
    assert torch.any(grads["episode"][:3] != 0)
    torch.testing.assert_close(grads["greedy"][3], grads["episode"][3])  # the last choice: nothing after it
    if kind == "fixed":
        # The core's gradient is the episode's; a pixel reader's differs by the earlier glimpses' candidates,
        # whose relaxation the greedy histogram no longer carries.
        for got, expected in zip(core_grads["greedy"], core_grads["episode"]):
            torch.testing.assert_close(got, expected)
    assert all(torch.any(g != 0) for g in core_grads["greedy"])
    with pytest.raises(ValueError, match="Unknown credit 'myopic'; valid values are"):
        run_episodes(policy, core, sampler, images, 1, credit="myopic")


def test_rollout_matches_the_environment(batch):
    """The differentiable rollout and MnistGlimpseEnv compute the same observations and predictions."""
    images, _ = batch
    policy, core = make_agent(step_bias=True)
    episode = run_episodes(policy, core, Sampler("bilinear"), images[:1], 4)
    env = MnistGlimpseEnv(max_glimpses=4, split="test", perception=core)
    observation, _ = env.reset(options={"index": 0})
    for step in range(4):
        torch.testing.assert_close(torch.as_tensor(observation), episode.observations[step, 0].detach())
        action = policy(torch.as_tensor(observation)[None], step)[0].detach().numpy()
        observation, _, terminated, _, info = env.step(action)
        torch.testing.assert_close(
            torch.as_tensor(info["prediction"]), torch.softmax(episode.logits[step, 0], -1).detach()
        )
    assert terminated


def test_accuracy_by_glimpse_counts_correct_predictions():
    torch.manual_seed(0)
    core = PerceptionCore()
    accuracy = accuracy_by_glimpse(RandomGlimpses(torch.Generator().manual_seed(0)), core, 3, batch_size=4000)
    assert accuracy.shape == (3,)
    data = load_mnist("test")
    episode = run_episodes(
        RandomGlimpses(torch.Generator().manual_seed(0)),
        core,
        Sampler("nearest"),
        data.images[:4000].float() / 255.0,
        3,
    )
    first_chunk = (episode.logits.argmax(-1) == data.labels[:4000]).sum(1)
    assert torch.all(first_chunk <= accuracy * len(data) + 1e-3)
    assert accuracy_table(torch.linspace(0.1, 0.9, 30)).keys() == {"1", "2", "5", "10", "25", "30"}


@pytest.mark.parametrize("kind", ["attention", "pixel", "fixed", "random"])
def test_checkpoint_round_trip(tmp_path, batch, kind):
    images, _ = batch
    policy, core = make_agent(step_bias=True)
    pixel = PixelAttention(core.observation_size, 4, hidden=8, temperature=0.5)
    policy = {"attention": policy, "pixel": pixel, "fixed": FixedSequence(4), "random": RandomGlimpses()}[kind]
    save_agent(tmp_path / "checkpoint.pt", "test", policy, core, 4)
    loaded, loaded_core, checkpoint = load_agent(tmp_path / "checkpoint.pt")
    assert checkpoint["glimpses"] == 4 and checkpoint["agent"] == "test"
    if kind != "random":
        a = run_episodes(policy.eval(), core.eval(), Sampler("nearest"), images, 4).logits
        b = run_episodes(loaded, loaded_core, Sampler("nearest"), images, 4).logits
        assert torch.equal(a, b)


def test_load_agent_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="train/"):
        load_agent(tmp_path / "missing.pt")
    torch.save({"format": "something else"}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="not an agent checkpoint"):
        load_agent(tmp_path / "other.pt")


@pytest.mark.slow
def test_train_script_smoke(tmp_path):
    """A tiny run writes a loadable checkpoint, the metrics schema, and the figure; evaluate.py
    reproduces its nearest-pixel accuracy."""
    import train.differentiable as script
    import train.evaluate as evaluate

    out = tmp_path / "run"
    metrics = script.main(
        script.Args(
            max_glimpses=3,
            epochs=1,
            batch_size=6000,
            out=str(out),
            device="cpu",
            step_bias=True,
            sampler="nearest",
            sampler_gradient="bilinear",
        )
    )
    saved = json.loads((out / "metrics.json").read_text())
    assert saved == metrics
    assert set(saved["test_accuracy"]) == {"1", "2", "3"}
    assert all(0.0 <= v <= 1.0 for v in saved["test_accuracy"].values())
    assert saved["readout"] == "nearest" and saved["train_sampler"] == "nearest+bilinear"
    assert saved["optimizer_steps"] == 10 and saved["readout_epochs"] == 1.0 and saved["readout_steps"] == 10
    assert (out / "glimpses.png").stat().st_size > 10_000
    result = evaluate.main(evaluate.Args(checkpoint=str(out / "checkpoint.pt"), device="cpu"))
    assert result["test_accuracy"] == saved["test_accuracy"]
    assert math.isclose(sum(result["test_accuracy"].values()), sum(saved["test_accuracy"].values()))


@pytest.mark.slow
def test_curve_images_record_the_accuracy_along_the_dual_steps_and_change_no_result(tmp_path):
    """--curve-images: test accuracy at dual steps 0, 1, 2 and 4 (the last), the run otherwise the same."""
    import train.differentiable as script

    def run(name, **extra):
        args = script.Args(
            max_glimpses=5, epochs=1, readout_epochs=0, batch_size=15_000, out=str(tmp_path / name), device="cpu"
        )
        return script.main(script.dataclasses.replace(args, **extra))

    plain, curved = run("plain"), run("curve", curve_images=100)
    assert "curve" not in plain and curved["curve_images"] == 100
    assert [point["step"] for point in curved["curve"]] == [0, 1, 2, 4]
    assert all(list(point["accuracy"]) == ["5"] for point in curved["curve"])
    assert curved["test_accuracy"] == plain["test_accuracy"]
    with pytest.raises(ValueError, match="--curve-images must be between 0"):
        run("bad", curve_images=-1)


@pytest.mark.slow
@pytest.mark.parametrize("memory", ["none", "pixels"])
def test_train_script_pixel_policy_and_time_budget(tmp_path, memory):
    """--policy pixel trains a PixelAttention (its noise annealed), evaluate.py reads it back; a
    --max-train-seconds budget stops the dual epochs but not the read-out epoch."""
    import train.differentiable as script
    import train.evaluate as evaluate

    out = tmp_path / "run"
    metrics = script.main(
        script.Args(
            max_glimpses=3,
            policy="pixel",
            pixel_noise_final=0.2,
            epochs=2,
            batch_size=6000,
            max_train_seconds=1e-9,
            out=str(out),
            device="cpu",
            pixel_memory=memory,
            pixel_candidates=4,
        )
    )
    assert metrics["agent"] == "differentiable-pixel" and metrics["attention_target"] == "label"
    assert metrics["optimizer_steps"] == 0 and metrics["readout_steps"] == 10
    policy, _, _ = load_agent(out / "checkpoint.pt")
    assert isinstance(policy, PixelAttention) and policy.memory == memory and policy.candidates == 4
    result = evaluate.main(evaluate.Args(checkpoint=str(out / "checkpoint.pt"), device="cpu"))
    assert result["test_accuracy"] == metrics["test_accuracy"]


@pytest.mark.parametrize("option", [{"pixel_memory": "pixels"}, {"pixel_estimator": "taken"}, {"pixel_candidates": 4}])
def test_train_script_rejects_pixel_options_without_pixel_policy(tmp_path, option):
    import train.differentiable as script

    ((name, value),) = option.items()
    flag = "--" + name.replace("_", "-")
    with pytest.raises(
        ValueError, match=f"{flag} {value} .* is an option of the pixel policy .*, not of --preset continuous"
    ):
        script.main(script.Args(max_glimpses=2, epochs=1, out=str(tmp_path), device="cpu", **option))


@pytest.mark.parametrize(
    "flag, message",
    [
        ("max_train_seconds", "--max-train-seconds must be >= 0"),
        ("readout_epochs", "--readout-epochs must be >= 0"),
        ("lr_final", "lr_final must be > 0"),
    ],
)
def test_train_script_rejects_negative_budgets(tmp_path, flag, message):
    import train.differentiable as script

    with pytest.raises(ValueError, match=message):
        script.main(
            script.Args(max_glimpses=2, epochs=1, batch_size=6000, out=str(tmp_path), device="cpu", **{flag: -1.0})
        )


@pytest.mark.slow
def test_train_script_starts_from_a_core_checkpoint(tmp_path):
    """--core-start PATH starts from that perception core, whatever its size; a missing file is an error."""
    import train.differentiable as script
    from envs.perception import PerceptionConfig

    torch.manual_seed(0)
    PerceptionCore(PerceptionConfig(channels=8, n_bins=2)).save(tmp_path / "core.pt")
    script.main(
        script.Args(
            max_glimpses=2,
            epochs=1,
            batch_size=6000,
            max_train_seconds=1e-9,
            readout_epochs=0,
            core_start=str(tmp_path / "core.pt"),
            out=str(tmp_path / "run"),
            device="cpu",
        )
    )
    _, core, _ = load_agent(tmp_path / "run" / "checkpoint.pt")
    assert (core.config.channels, core.config.n_bins) == (8, 2)
    with pytest.raises(
        ValueError, match="--core-start missing.pt: not random-glimpses, scratch, pretrain or an existing file"
    ):
        script.main(
            script.Args(max_glimpses=2, epochs=1, core_start="missing.pt", out=str(tmp_path / "bad"), device="cpu")
        )


@pytest.mark.parametrize(
    "option",
    [{"channels": 16}, {"n_bins": 32}, {"encoding": "fourier"}, {"core_head_layers": 2}, {"core_dropout": 0.3}],
)
def test_train_script_rejects_core_sizes_without_scratch_core(tmp_path, option):
    """--channels, --n-bins and --encoding size a fresh core; with a warm start they would be ignored."""
    import train.differentiable as script

    ((name, value),) = option.items()
    flag = "--" + name.replace("_", "-")
    with pytest.raises(
        ValueError,
        match=f"{flag} {value} .* sizes a --core-start scratch or pretrain; --core-start random-glimpses brings its own size",
    ):
        script.main(script.Args(max_glimpses=2, epochs=1, out=str(tmp_path), device="cpu", **option))


def test_learning_rate_schedule_scales_both_optimizers_from_their_start():
    trainer = DualOptimizerTrainer(
        FixedSequence(2), PerceptionCore(), Sampler(), 2, perception_lr=1e-3, attention_lr=1e-2
    )
    trainer.scale_learning_rates(0.5)
    trainer.scale_learning_rates(0.25)  # from the start, not compounded
    assert [g["lr"] for g in trainer.perception_optimizer.param_groups] == [2.5e-4]
    assert [g["lr"] for g in trainer.attention_optimizer.param_groups] == [2.5e-3]
    with pytest.raises(ValueError, match="scale must be > 0"):
        trainer.scale_learning_rates(0.0)


def test_presets_set_recipes_and_flags_change_them():
    """--preset picks a recipe's values; run flags change them; recipe-only fields have no flag."""
    import train.differentiable as script

    args = script.parse_args(["--preset", "best", "--seed", "1", "--epochs", "2"])
    assert (args.preset, args.policy, args.pixel_memory, args.attention_credit) == ("best", "pixel", "pixels", "greedy")
    assert (args.core_start, args.channels, args.n_bins, args.encoding) == ("pretrain", 16, 32, "learned")
    assert (args.seed, args.epochs, args.attention_lr) == (1, 2, 1e-2)
    assert script.parse_args([]) == script.Args()
    for name in script.PRESETS:
        script.check_args(script.preset_args(name))  # every preset is a valid combination
    with pytest.raises(SystemExit):
        script.parse_args(["--preset", "nonsense"])
    with pytest.raises(SystemExit):
        script.parse_args(["--policy", "pixel"])  # a recipe field: only presets set it


@pytest.mark.parametrize(
    "flags, message",
    [
        (
            ["--preset", "fixed-sequence", "--attention-hidden", "64"],
            "--attention-hidden 64 .* a fixed sequence has none",
        ),
        (["--preset", "pixel", "--no-step-bias"], "--step-bias False .* not of --preset pixel"),
        (
            ["--preset", "continuous", "--pixel-noise-final", "0.5"],
            "--pixel-noise-final 0.5 .* not of --preset continuous",
        ),
        (
            ["--preset", "best", "--core-start", "random-glimpses"],
            "--channels 16 .* --core-start random-glimpses brings its own size",
        ),
        (["--pretrain-steps", "5"], "--pretrain-steps 5 .* option of --core-start pretrain"),
        (["--pretrain-on", "pixels"], "--pretrain-on pixels .* option of --core-start pretrain"),
        (["--preset", "continuous", "--attention-target", "value"], "value trains the pixel policy's scores"),
        (["--preset", "ablation-lr-final", "--stages", "2"], "drop --lr-final"),
        (["--plateau-patience", "2"], "pass --val-images N"),
        (["--val-images", "60000"], "--val-images must be between 0 and 59744"),
        (
            ["--preset", "ablation-gdfs-schedule", "--pixel-temperature-final", "0"],
            "--pixel-temperature-final must be > 0",
        ),
        (["--stages", "0"], "--stages must be >= 1"),
        (["--batch-size", "0"], "--batch-size must be between 1 and 60000"),
        (["--epochs", "-1"], "must be >= 0"),
    ],
)
def test_options_a_recipe_would_ignore_are_refused(flags, message):
    import train.differentiable as script

    with pytest.raises(ValueError, match=message):
        script.check_args(script.parse_args(flags))


@pytest.mark.slow
def test_core_head_and_embedding_size_a_pretrained_core_and_bad_sizes_write_nothing(tmp_path):
    """--encoding embedding, --core-head-hidden, --core-head-layers and --core-dropout reach the fresh core;
    a size PerceptionConfig refuses is refused before the output folder is touched."""
    import train.differentiable as script

    common = dict(max_glimpses=2, epochs=0, readout_epochs=0, core_start="pretrain", channels=4, n_bins=2, device="cpu")
    with pytest.raises(ValueError, match="PerceptionConfig.dropout must lie in"):
        script.main(script.Args(core_dropout=1.5, out=str(tmp_path / "bad"), **common))
    assert not (tmp_path / "bad").exists()
    options = dict(encoding="embedding", core_head_hidden=8, core_head_layers=2, core_dropout=0.3, pretrain_steps=1)
    script.main(script.Args(out=str(tmp_path / "run"), **common, **options))
    core = PerceptionCore.load(tmp_path / "run" / "core" / "perception.pt")
    config = core.config
    assert (config.encoding, config.hidden, config.head_layers, config.dropout) == ("embedding", 8, 2, 0.3)
    assert core.encoding.location_map.shape == (784, 4)


@pytest.mark.slow
def test_core_pretrain_trains_a_core_first_then_reuses_it(tmp_path):
    """--core-start pretrain writes OUT/core/perception.pt (seed 0 whatever --seed) and a second run reuses it."""
    import train.differentiable as script

    def run(out, seed):
        args = script.Args(
            max_glimpses=2,
            epochs=0,
            readout_epochs=0,
            core_start="pretrain",
            channels=4,
            n_bins=2,
            pretrain_steps=2,
            seed=seed,
            out=str(out),
            device="cpu",
            overwrite=True,
        )
        script.main(args)
        return PerceptionCore.load(out / "core" / "perception.pt")

    first, other_seed = run(tmp_path / "a", 0), run(tmp_path / "b", 3)
    assert (first.config.channels, first.config.n_bins) == (4, 2)
    for x, y in zip(first.state_dict().values(), other_seed.state_dict().values()):
        assert torch.equal(x, y)
    stamp = (tmp_path / "a" / "core" / "perception.pt").stat().st_mtime_ns
    run(tmp_path / "a", 0)
    assert (tmp_path / "a" / "core" / "perception.pt").stat().st_mtime_ns == stamp


@pytest.mark.slow
def test_budget_seconds_caps_every_phase_and_excludes_max_train_seconds(tmp_path, capsys):
    """--budget-seconds shares the wall clock among pretraining, the dual epochs and the read-out: a
    budget too small for one step of each leaves none of them, each says so in one line, and the run
    still writes its results."""
    import train.differentiable as script

    settings = dict(max_glimpses=3, epochs=2, batch_size=6000, device="cpu", pixel_candidates=4)
    base = script.dataclasses.replace(script.preset_args("pixel-memory"), **settings)
    metrics = script.main(script.dataclasses.replace(base, budget_seconds=1e-9, out=str(tmp_path / "run")))
    assert metrics["optimizer_steps"] == 0 and metrics["readout_steps"] == 0
    printed = capsys.readouterr().out
    for stage, steps in (("dual epochs", 20), ("read-out epochs", 10)):
        assert re.search(
            rf"^{stage}: time budget of \S+ s reached \(--budget-seconds\) at step 0/{steps}$", printed, re.M
        )
    with pytest.raises(ValueError, match="--budget-seconds already caps the dual epochs; drop --max-train-seconds"):
        script.main(script.dataclasses.replace(base, budget_seconds=60, max_train_seconds=30, out=str(tmp_path / "x")))


def test_margin_and_entropy_attention_losses():
    """margin: softplus(max wrong logit - true logit); entropy: of the prediction, blind to the label."""
    import math

    from agents.differentiable import attention_loss

    logits = torch.tensor([[[2.0, 0.5, -1.0], [0.0, 0.0, 0.0]]])  # (T=1, B=2, 3 classes)
    labels = torch.tensor([0, 2])
    margin = attention_loss(logits, labels, "margin")
    expected = (math.log1p(math.exp(0.5 - 2.0)) + math.log1p(math.exp(0.0))) / 2
    assert margin.item() == pytest.approx(expected, rel=1e-6)
    entropy = attention_loss(logits, labels, "entropy")
    assert entropy.item() == pytest.approx(attention_loss(logits, labels.flip(0), "entropy").item())
    p = torch.softmax(logits[0, 0], -1)
    assert entropy.item() == pytest.approx(((-(p * p.log()).sum()).item() + math.log(3)) / 2, rel=1e-6)
    with pytest.raises(ValueError, match="valid targets"):
        attention_loss(logits, labels, "max")


def test_value_loss_regresses_the_chosen_scores_on_the_loss_drops():
    """value: (s_t - (CE_{t-1} - CE_t))^2 with CE_{-1} = ln(classes), CE of detached logits."""
    from agents.differentiable import value_loss

    logits = torch.tensor([[[2.0, 0.0, 0.0], [0.0, 0.0, 1.0]], [[3.0, 0.0, 0.0], [0.0, 0.0, 0.0]]], requires_grad=True)
    labels = torch.tensor([0, 1])  # (T=2, B=2, 3 classes)
    ce = -torch.log_softmax(logits.detach(), -1)[:, [0, 1], [0, 1]]  # (T, B)
    drops = torch.stack([math.log(3) - ce[0], ce[0] - ce[1]])
    scores = torch.tensor([[0.5, -0.2], [0.1, 0.3]], requires_grad=True)
    loss = value_loss(scores, logits, labels)
    assert loss.item() == pytest.approx(((scores.detach() - drops) ** 2).mean().item(), rel=1e-6)
    loss.backward()
    assert logits.grad is None  # the loss drops are targets, not a path into the core
    torch.testing.assert_close(scores.grad, (scores.detach() - drops) / 2)


def test_value_target_trains_an_epsilon_greedy_value_head_and_only_it(batch):
    """The value target needs PixelAttention(exploration="epsilon") and that policy needs it; a step
    moves the policy by the value loss and the core by the perception loss alone."""
    images, labels = batch
    torch.manual_seed(0)
    core = PerceptionCore()
    policy = PixelAttention(core.observation_size, 4, hidden=16, memory="pixels", exploration="epsilon")
    for target, other in (("label", policy), ("value", make_agent()[0])):
        with pytest.raises(ValueError, match="attention_target='value' trains a PixelAttention"):
            DualOptimizerTrainer(other, core, Sampler("bilinear"), 4, attention_target=target)
    trainer = DualOptimizerTrainer(policy, core, Sampler("bilinear"), 4, attention_target="value", attention_lr=1e-2)
    policy.noise = 0.5
    torch.manual_seed(1)
    perception, attention, _ = trainer.losses(images, labels)
    assert torch.autograd.grad(attention, list(core.parameters()), allow_unused=True) == (None,) * len(
        list(core.parameters())
    )
    expected = torch.autograd.grad(perception, list(core.parameters()), retain_graph=True)
    torch.manual_seed(1)
    trainer.step(images, labels)
    for param, grad in zip(core.parameters(), expected):
        torch.testing.assert_close(param.grad, grad)
    # With the core fixed and every pixel drawn uniformly (noise 1, one seed), the episodes and their
    # loss drops repeat: the value head's regression error on them falls.
    trainer = DualOptimizerTrainer(
        policy, core, Sampler("bilinear"), 4, attention_target="value", perception_lr=0.0, attention_lr=1e-2
    )
    policy.noise = 1.0

    def value_loss_on_seed_2() -> float:
        torch.manual_seed(2)
        return trainer.losses(images, labels)[1].item()

    first = value_loss_on_seed_2()
    for _ in range(10):
        torch.manual_seed(2)
        trainer.step(images, labels)
    assert value_loss_on_seed_2() < first / 4


@pytest.mark.parametrize("memory", ["none", "pixels"])
def test_epsilon_exploration_takes_the_best_or_a_uniform_unread_pixel(batch, memory):
    images, _ = batch
    torch.manual_seed(0)
    core = PerceptionCore()
    policy = PixelAttention(core.observation_size, 6, hidden=16, memory=memory, exploration="epsilon").train()
    policy.noise = 0.0  # pure greedy: what acting takes
    greedy = run_episodes(policy, core, Sampler("nearest"), images, 6).coords
    acting = run_episodes(policy.eval(), core, Sampler("nearest"), images, 6).coords
    torch.testing.assert_close(greedy, acting)
    policy.train().noise = 1.0  # uniform pixels
    coords = run_episodes(policy, core, Sampler("nearest"), images.repeat(8, 1, 1), 6).coords
    flat = (coords[..., 0] * 28 + coords[..., 1]).long()  # (T, B)
    assert len(flat.unique()) > 600  # spread over the image, not the argmax
    if memory == "pixels":  # never a pixel already read
        assert all(len(set(column.tolist())) == 6 for column in flat.T)
    with pytest.raises(ValueError, match="Unknown PixelAttention exploration 'boltzmann'"):
        PixelAttention(10, 2, exploration="boltzmann")
