"""agents.schedule: GDFS's staged schedule (stage values, plateau cuts, early stopping, best weights)."""

from __future__ import annotations

import math

import pytest
import torch

from agents.baselines import FixedSequence
from agents.evaluation import accuracy_on
from agents.schedule import Plateau, Stages, stage_value, validate
from envs.data import load_mnist
from envs.perception import PerceptionCore, perception_loss


def test_stage_value_is_geometric_from_start_to_end():
    assert [round(stage_value(1.0, 0.1, s, 5), 6) for s in range(5)] == [1.0, 0.562341, 0.316228, 0.177828, 0.1]
    assert stage_value(2.0, 0.1, 0, 1) == 2.0
    with pytest.raises(ValueError, match="positive"):
        stage_value(1.0, 0.0, 1, 3)
    with pytest.raises(ValueError, match="stage 3 is not one of the 3 stages"):
        stage_value(1.0, 0.1, 3, 3)


def test_plateau_cuts_the_scale_stops_the_stage_and_keeps_the_best_weights():
    plateau = Plateau(patience=1, factor=0.2, min_scale=0.05)
    losses = [1.0, 0.9, 0.95, 0.95, 0.95, 0.95]
    history = []
    for step, loss in enumerate(losses):
        best = plateau.update(loss, {"w": torch.tensor([float(step)])}, step)
        history.append((best, plateau.scale, plateau.stop))
    assert [h[0] for h in history] == [True, True, False, False, False, False]
    # more than 1 validation without a new best -> a cut (count restarts), not below min_scale
    assert [h[1] for h in history] == [1.0, 1.0, 1.0, 0.2, 0.2, 0.05]
    # more than patience + 1 = 2 without a new best -> the stage stops
    assert [h[2] for h in history] == [False, False, False, False, True, True]
    assert plateau.best_loss == 0.9 and plateau.best_step == 1 and plateau.best_state["w"].item() == 1.0
    plateau.new_stage()
    assert plateau.scale == 1.0 and not plateau.stop and plateau.best_loss == 0.9
    assert not plateau.update(0.92, {"w": torch.tensor([9.0])}, 9)  # the stage's best, not the run's
    restored = Plateau(patience=1)
    restored.load_state_dict(plateau.state_dict())
    assert restored.state_dict() == plateau.state_dict()
    with pytest.raises(ValueError, match="training diverged"):
        plateau.update(math.nan, {}, 10)
    with pytest.raises(ValueError, match="patience must be >= 0"):
        Plateau(patience=-1)


def test_validate_is_the_hard_choices_loss_and_accuracy_and_restores_modes():
    data = load_mnist("test")
    images, labels = data.images[:300], data.labels[:300]
    torch.manual_seed(0)
    policy, core = FixedSequence(4).train(), PerceptionCore().train()
    loss, accuracy = validate(policy, core, images, labels, 4, batch_size=128)
    assert policy.training and core.training
    torch.testing.assert_close(accuracy, accuracy_on(policy.eval(), core.eval(), images, labels, 4))
    from agents.rollout import run_episodes
    from envs.sampler import Sampler

    with torch.no_grad():
        logits = run_episodes(policy, core, Sampler("nearest"), images.float() / 255.0, 4).logits
    assert loss == pytest.approx(float(perception_loss(logits, labels)), rel=1e-5)


def test_stages_anneal_linearly_in_one_stage_and_geometrically_across_several():
    one = Stages(1)
    assert one.done(25, 100) == 0.25 and one.done(25, 100, clock=60.0, seconds=120.0) == 0.5
    assert one.done(90, 100, clock=300.0, seconds=120.0) == 1.0  # the time budget is spent: annealed
    assert one.anneal(1.0, 0.1, 0.5) == 1.0 - (1.0 - 0.1) * 0.5
    staged = Stages(5)
    assert not staged.over(step=19, clock=0.0, steps=100, seconds=math.inf)
    assert staged.over(step=20, clock=0.0, steps=100, seconds=math.inf)  # a fifth of the steps
    assert staged.over(step=1, clock=25.0, steps=100, seconds=100.0)  # more than a fifth of the seconds
    for _ in range(4):
        staged.advance(step=20, clock=25.0)
    assert staged.last and staged.done(0, 100) == 1.0 and staged.anneal(1.0, 0.1, 0.0) == pytest.approx(0.1)
    again = Stages(5)
    again.load_state_dict(staged.state_dict())
    assert again.state_dict() == {"index": 4, "start_step": 20, "start_clock": 25.0}
