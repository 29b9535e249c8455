"""Train a PPO glimpse agent (Stable-Baselines3) on the batched environment.

    python train/ppo.py                                     # 25 glimpses, frozen packaged core
    python train/ppo.py --learn-perception                  # the env also trains its core (perception optimizer)
    python train/ppo.py --max-glimpses 10 --num-envs 512 --total-steps 2000000 --torch-threads 1
    python train/differentiable.py --preset fixed-sequence --out runs/fixed && \
        python train/ppo.py --learn-perception --init-from runs/fixed/checkpoint.pt   # warm start
    python train/ppo.py --action-type pixel                 # MaskablePPO, one pixel per action, on the record
    python train/differentiable.py --preset best --out runs/best && \
        python train/ppo.py --action-type pixel --init-from runs/best/checkpoint.pt      # from the best agent

The agent acts through :class:`envs.sb3.MnistGlimpseSB3VecEnv` (``--num-envs`` episodes as one batch
of tensors). With ``--learn-perception`` the environment runs its own copy of the packaged core with
``learn_perception=True``: after each batch of finished episodes it takes one cross-entropy step on
the true labels (:meth:`envs.simulator.GlimpseSimulator.learn`); that core is the one saved. Rewards
are the environment's dense log-likelihood gains; ``--gamma`` < 1 weights the early glimpses more
(the discounted return telescopes into a weighted sum of the log-likelihood after every glimpse).
``--init-from`` warm-starts from a learned fixed sequence: PPO's per-glimpse offsets start at its
locations and the environment runs its core instead of the packaged one (docs/results.md compares
PPO from scratch, ``ppo-joint``, with PPO from the fixed sequence, ``ppo-joint-from-fixed``).

``--action-type pixel`` runs sb3-contrib's ``MaskablePPO`` on the record observation
(``obs_type="record"``: the summary, the mask and grey levels of the pixels read, the step) with
``Discrete(784)`` actions masked to the unread pixels. Its actor is the differentiable pixel agent's
policy class (:class:`agents.ppo.PixelActorCriticPolicy` over a
:class:`~agents.pixel_attention.PixelAttention`), so ``--init-from`` may start it from a trained
pixel agent (``train/differentiable.py --preset best``), whose core the environment then runs. Such
an agent is evaluated through the environment (:func:`agents.evaluation.accuracy_by_glimpse`, as every agent).

Around SB3's ``learn`` run this script's callbacks: every ``--eval-every`` environment steps the
deterministic policy is evaluated on a fixed subset of ``--eval-images`` test images, its time kept
off the training clock (:class:`SubsetEvalCallback`, metrics.json's ``eval_subset_curve``); a
progress bar counts the environment steps (:class:`StepProgressBar`); and each rollout boundary is a
step of the run's resume point (:class:`ResumeCallback`, with :class:`PPOState` what ``resume.pt``
keeps of the model and the environment).

Writes ``OUT/model.zip`` (SB3's ``PPO.load``), ``OUT/checkpoint.pt`` (policy + core, for
``train/evaluate.py``), ``OUT/metrics.json`` (nearest-pixel test accuracy after 1, 2, 5, 10, 25
glimpses, deterministic policy) and ``OUT/glimpses.png``; TensorBoard logs go to ``OUT/tb``.
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import tyro
from sb3_contrib import MaskablePPO
from stable_baselines3 import PPO
from stable_baselines3.common.callbacks import BaseCallback
from torch import nn
from tqdm import tqdm

from agents.cli import UserValueError, plain_text, refuse_retired, run_main, user_errors
from agents.evaluation import accuracy_by_glimpse, accuracy_on
from agents.pixel_attention import PixelAttention
from agents.ppo import (
    GlimpseActorCriticPolicy,
    PixelActorCriticPolicy,
    PolicyConfig,
    SB3GlimpsePolicy,
    VecStepFeature,
    load_fixed_sequence,
    load_pixel_agent,
)
from envs.data import load_mnist
from envs.perception import PerceptionCore
from envs.sb3 import MnistGlimpseSB3VecEnv
from run import (
    ResumableArgs,
    ResumePoint,
    accuracy_table,
    check_rl_args,
    claim_output,
    core_training,
    refuse_with_pixel_actions,
    say,
    start,
    summary,
    write_agent_run,
)


@dataclass
class Args(ResumableArgs):
    max_glimpses: int = 25
    """glimpses per episode (T)"""
    action_type: Literal["continuous", "pixel"] = "continuous"
    """continuous: PPO, a Gaussian (i, j) on the default observation; pixel: MaskablePPO choosing one of the
    784 pixels not read yet, on the record observation, with a PixelAttention actor"""
    num_envs: int = 256
    """episodes simulated in parallel (one batched env)"""
    total_steps: int = 5_000_000
    """environment steps (glimpses) to train for"""
    learn_perception: bool = False
    """the env trains its core with the perception optimizer (the environment's learn_perception);
    without it the core stays frozen (metrics.json's core_training: joint or frozen)"""
    perception_lr: float = 1e-3
    """Adam learning rate of the perception optimizer (joint mode)"""
    sampler: Literal["nearest", "bilinear", "bicubic", "gaussian"] = "nearest"
    """training read-out (PPO needs no gradient through it; nearest is also the evaluation read-out)"""
    n_steps: int = 0
    """steps per environment per rollout (0: one episode, T)"""
    num_minibatches: int = 4
    """minibatches per PPO epoch (minibatch size = n_steps * num_envs / num_minibatches)"""
    n_epochs: int = 4
    """PPO epochs per rollout"""
    learning_rate: float = 3e-4
    """Adam learning rate of PPO"""
    gamma: float = 0.95
    """discount"""
    gae_lambda: float = 0.95
    """GAE lambda"""
    clip_range: float = 0.2
    """PPO clipping"""
    ent_coef: float = 0.0
    """entropy bonus"""
    net_arch: tuple[int, ...] = (64, 64)
    """hidden layer widths of the actor and of the critic (SB3's net_arch)"""
    activation: Literal["tanh", "relu"] = "tanh"
    """activation of the hidden layers"""
    log_std_init: float = -1.5
    """continuous actions: initial log std of the Gaussian actions (normalised units; clipped to [-1, 1])"""
    step_feature: bool = True
    """continuous actions: append t / T to the observation (the default observation does not say how many
    glimpses were taken; the record's "step" does)"""
    step_offsets: bool = True
    """continuous actions: learned per-glimpse action offsets (needs --step-feature)"""
    step_offsets_init: Literal["spread", "uniform"] = "spread"
    """continuous actions: where the per-glimpse offsets start: spread, a sequence that covers the digit's
    box evenly (agents.baselines.spread_sequence), the same for every seed; uniform, a random fixed
    sequence drawn U(-1, 1) from the seed"""
    eval_every: int = 200_000
    """environment steps between evaluations on a fixed 2,000-image test subset"""
    eval_images: int = 2000
    """size of that subset"""
    perception: str | None = None
    """a perception-core checkpoint the environment runs instead of the packaged core (train/export_core.py
    writes an agent's); --init-from brings its own"""
    init_from: str | None = None
    """warm start, and the environment runs the checkpoint's core: continuous actions, a fixed-sequence agent
    (train/differentiable.py --preset fixed-sequence) whose locations PPO's per-glimpse offsets start at; pixel
    actions, a pixel agent with a record (--preset best) whose PixelAttention the actor starts as"""
    progress_bar: bool = True
    """show a progress bar of environment steps (a resumed run's starts where it resumes)"""
    seed: int = 0
    """seed of python, numpy, torch, PPO and the environments"""
    device: str = "auto"
    """cpu, cuda or auto (environment and networks)"""
    out: str = "runs/ppo"
    """output folder"""


def check_action_args(args: Args) -> None:
    """Refuse two cores at once, and the Gaussian policy's options with pixel actions, where nothing would read them."""
    if args.perception and args.init_from:
        raise UserValueError("--init-from brings its agent's core; drop --perception (or --init-from).")
    # the record observation carries the step, and the actions are pixels
    refuse_with_pixel_actions(args, ("log_std_init", "step_feature", "step_offsets", "step_offsets_init"))


def build_model(args: Args, env, batched: MnistGlimpseSB3VecEnv, warm, out: Path, device: torch.device):
    """SB3's PPO (continuous actions) or MaskablePPO (pixel actions), started from ``warm`` if given,
    and the policy that acts, is evaluated and is saved."""
    n_steps = args.n_steps or args.max_glimpses
    if args.action_type == "pixel":
        attention = (
            warm[0] if warm else PixelAttention(batched.core.observation_size, args.max_glimpses, memory="pixels")
        )
        algorithm, policy_class = MaskablePPO, PixelActorCriticPolicy
        policy_kwargs = dict(
            attention=attention.checkpoint_config(),
            critic_hidden=list(args.net_arch),
            critic_activation=args.activation,
        )
    else:
        config = PolicyConfig.for_space(
            env.observation_space,
            hidden=list(args.net_arch),
            activation=args.activation,
            log_std_init=args.log_std_init,
            step_feature=args.step_feature,
            glimpses=args.max_glimpses,
            step_offsets=args.step_offsets,
            step_offsets_init=args.step_offsets_init,
        )
        algorithm, policy_class, policy_kwargs = PPO, GlimpseActorCriticPolicy, config.policy_kwargs()
    model = algorithm(
        policy_class,
        env,
        n_steps=n_steps,
        batch_size=max(1, n_steps * args.num_envs // args.num_minibatches),
        n_epochs=args.n_epochs,
        learning_rate=args.learning_rate,
        gamma=args.gamma,
        gae_lambda=args.gae_lambda,
        clip_range=args.clip_range,
        ent_coef=args.ent_coef,
        policy_kwargs=policy_kwargs,
        tensorboard_log=str(out / "tb"),
        seed=args.seed,
        device=device,
        verbose=0,
    )
    if args.action_type == "pixel":
        if warm:
            model.policy.start_from(warm[0])
        return model, model.policy.attention
    if warm:
        model.policy.start_from_sequence(warm[0])
    return model, SB3GlimpsePolicy(model.policy, config)


def subset_accuracy(
    policy: nn.Module, core: PerceptionCore, images: torch.Tensor, labels: torch.Tensor, max_glimpses: int
) -> torch.Tensor:
    """Accuracy after each glimpse ``(T,)`` on ``uint8`` ``images``, nearest read-out, with the policy
    (an :class:`~agents.ppo.SB3GlimpsePolicy` or a :class:`~agents.pixel_attention.PixelAttention`) in evaluation
    mode for the rollout (:func:`agents.evaluation.accuracy_on`)."""
    was_training = policy.training
    policy.eval()
    accuracy = accuracy_on(policy, core, images, labels, max_glimpses)
    policy.train(was_training)
    return accuracy


class SubsetEvalCallback(BaseCallback):
    """Every ``every`` environment steps (and at the end), the deterministic policy's nearest-pixel
    accuracy after ``budget`` glimpses on a fixed subset of ``size`` test images.

    Its own time is kept off the training clock: ``curve`` holds ``{"env_steps", "seconds",
    "accuracy", "train_accuracy"}`` (the last: the stochastic policy's recent training episodes) with ``seconds`` the training time so far, evaluation excluded;
    ``seconds_to(threshold)`` the first such time at which the accuracy reached ``threshold``.

    :param policy: the adapter over ``model.policy``, or the :class:`~agents.pixel_attention.PixelAttention`
        that acts in :class:`~agents.ppo.PixelActorCriticPolicy`.
    :param core: the perception core (the environment's, live, in joint training).
    :param max_glimpses: episode length ``T`` of the evaluation.
    :param budget: the glimpse count whose accuracy is recorded (``<= T``).
    :param size: subset size (the first ``size`` images of a fixed permutation of the test split).
    :param every: environment steps between evaluations.
    :param seed: picks the subset.
    :param device: where the subset and the rollouts live.
    :param report: called with one line per evaluation (e.g. :func:`run.say`); ``None``: silent.
    """

    def __init__(
        self,
        policy: nn.Module,
        core: PerceptionCore,
        max_glimpses: int,
        budget: int,
        size: int = 2000,
        every: int = 100_000,
        seed: int = 0,
        device: torch.device | str = "cpu",
        report: Callable[[str], None] | None = None,
    ) -> None:
        super().__init__()
        data = load_mnist("test", device)
        order = torch.randperm(len(data), generator=torch.Generator().manual_seed(seed))[:size].to(data.images.device)
        self.images = data.images[order]
        self.labels = data.labels[order]
        self.glimpse_policy, self.core = policy, core
        self.max_glimpses, self.budget, self.every, self.report = max_glimpses, budget, every, report
        self.curve: list[dict[str, float]] = []
        self.eval_seconds = 0.0
        self._start = 0.0
        self._earlier = 0.0  # training seconds of the run this one resumes
        self._last = -every

    def training_seconds(self) -> float:
        """Seconds since training started, evaluation time excluded."""
        return self._earlier + time.perf_counter() - self._start - self.eval_seconds

    def state_dict(self) -> dict:
        """The curve so far and the training time: what a resumed run continues from."""
        return {"curve": list(self.curve), "seconds": self.training_seconds(), "last": self._last}

    def load_state_dict(self, state: dict) -> None:
        self.curve, self._earlier, self._last = list(state["curve"]), state["seconds"], state["last"]

    def _on_training_start(self) -> None:
        self._start = time.perf_counter()
        self.eval_seconds = 0.0

    def _evaluate(self) -> None:
        seconds = self.training_seconds()
        started = time.perf_counter()
        accuracy = float(
            subset_accuracy(self.glimpse_policy, self.core, self.images, self.labels, self.max_glimpses)[
                self.budget - 1
            ]
        )
        self.eval_seconds += time.perf_counter() - started
        self._last = self.num_timesteps
        point = {"env_steps": int(self.num_timesteps), "seconds": round(seconds, 2), "accuracy": round(accuracy, 4)}
        if self.model.ep_success_buffer:  # the stochastic training policy's recent accuracy (info "is_success")
            point["train_accuracy"] = round(float(np.mean(self.model.ep_success_buffer)), 4)
        self.curve.append(point)
        self.logger.record("eval/subset_accuracy", accuracy)
        if self.report is not None:
            train = f" (training episodes {100 * point['train_accuracy']:.1f}%)" if "train_accuracy" in point else ""
            self.report(
                f"step {point['env_steps']:,}: test accuracy {100 * accuracy:.1f}% after {self.budget} glimpses "
                f"on {len(self.labels):,} test images{train}"
            )

    def _on_step(self) -> bool:
        if self.num_timesteps - self._last >= self.every:
            self._evaluate()
        return True

    def _on_training_end(self) -> None:
        if not self.curve or self.curve[-1]["env_steps"] != self.num_timesteps:
            self._evaluate()

    def seconds_to(self, threshold: float) -> float | None:
        return next((point["seconds"] for point in self.curve if point["accuracy"] >= threshold), None)


class StepProgressBar(BaseCallback):
    """A progress bar of environment steps over the whole run, for SB3's ``learn``: a resumed run's
    bar starts at the step it resumes from, and ends at the step the last rollout reaches (SB3 runs
    whole rollouts, so a run may end a little past its ``total_timesteps``).

    :param description: the bar's label.
    """

    def __init__(self, description: str = "") -> None:
        super().__init__()
        self.description = description
        self.bar: tqdm | None = None

    def _on_training_start(self) -> None:
        now, total = int(self.model.num_timesteps), int(self.model._total_timesteps)
        rollout = int(getattr(self.model, "n_steps", 1)) * self.training_env.num_envs
        end = now + math.ceil(max(total - now, 0) / rollout) * rollout
        self.bar = tqdm(total=end, initial=now, desc=self.description, unit="step", unit_scale=True, dynamic_ncols=True)

    def _on_step(self) -> bool:
        self.bar.update(self.training_env.num_envs)
        return True

    def _on_training_end(self) -> None:
        self.close()

    def close(self) -> None:
        """Close the bar (also when ``learn`` was interrupted, which skips ``_on_training_end``)."""
        if self.bar is not None:
            self.bar.close()


class ResumeCallback(BaseCallback):
    """Hands each rollout boundary of SB3's ``learn`` to the run's resume point
    (:meth:`run.ResumePoint.step`): the state it keeps is saved every ``save_every`` seconds, and on
    SIGINT/SIGTERM it is saved and training stops.

    At the start of a rollout the previous one is consumed and the next not begun, so the weights,
    the optimizer, the environment and the last observation are all the state there is
    (:class:`PPOState`).

    :param resume: the run's resume point.
    """

    def __init__(self, resume: ResumePoint) -> None:
        super().__init__()
        self.resume = resume

    def _on_rollout_start(self) -> None:
        self.resume.step(self.num_timesteps)

    def _on_step(self) -> bool:
        return True


def _tensors(observation: Any) -> Any:
    """An observation (an array, or a dict of arrays for ``obs_type="record"``) as CPU tensors, copied."""
    if isinstance(observation, dict):
        return {key: _tensors(value) for key, value in observation.items()}
    return torch.from_numpy(np.asarray(observation).copy())


def _arrays(observation: Any) -> Any:
    """The inverse of :func:`_tensors`."""
    if isinstance(observation, dict):
        return {key: _arrays(value) for key, value in observation.items()}
    return observation.numpy().copy()


def ppo_state(model: Any, env: Any) -> dict:
    """What an SB3 on-policy model holds between two rollouts: weights, optimizer, counters, the last
    observation and the episode statistics, plus the environment's own state (``env.state_dict()``)."""
    return {
        "policy": model.policy.state_dict(),
        "optimizer": model.policy.optimizer.state_dict(),
        "num_timesteps": model.num_timesteps,
        "n_updates": model._n_updates,
        "episode_num": model._episode_num,
        "last_obs": _tensors(model._last_obs),
        "last_episode_starts": torch.from_numpy(np.asarray(model._last_episode_starts).copy()),
        "ep_info_buffer": [{k: float(v) for k, v in info.items()} for info in model.ep_info_buffer or []],
        "ep_success_buffer": [float(success) for success in model.ep_success_buffer or []],
        "env": env.state_dict(),
    }


def load_ppo_state(model: Any, env: Any, state: dict) -> None:
    """Restore :func:`ppo_state`'s output before ``model.learn(..., reset_num_timesteps=False)``,
    which then continues from the saved observation instead of resetting the environment."""
    model.policy.load_state_dict(state["policy"])
    model.policy.optimizer.load_state_dict(state["optimizer"])
    model.num_timesteps, model._n_updates, model._episode_num = (
        state["num_timesteps"],
        state["n_updates"],
        state["episode_num"],
    )
    model._last_obs = _arrays(state["last_obs"])
    model._last_episode_starts = state["last_episode_starts"].numpy().copy()
    model.ep_info_buffer = deque(state["ep_info_buffer"], maxlen=model._stats_window_size)
    model.ep_success_buffer = deque(state["ep_success_buffer"], maxlen=model._stats_window_size)
    env.load_state_dict(state["env"])


class PPOState:
    """An SB3 on-policy model and its environment as one object with a ``state_dict``
    (:func:`ppo_state`) and a ``load_state_dict`` (:func:`load_ppo_state`), for a resume point."""

    def __init__(self, model: Any, env: Any) -> None:
        self.model, self.env = model, env

    def state_dict(self) -> dict:
        return ppo_state(self.model, self.env)

    def load_state_dict(self, state: dict) -> None:
        load_ppo_state(self.model, self.env, state)


def main(args: Args, stop_after: int | None = None) -> dict:
    """Train, evaluate and write the run. ``stop_after``: act as if interrupted at the first rollout
    boundary after that many environment steps (tests of --resume)."""
    check_rl_args(args, Args.perception_lr)
    check_action_args(args)
    device = start(args)
    pixel = args.action_type == "pixel"
    warm = None  # a warm start or a core is read (and refused) before anything is written
    with user_errors(ValueError, FileNotFoundError):  # an --init-from or --perception file that cannot be used
        if args.init_from:
            warm = (load_pixel_agent if pixel else load_fixed_sequence)(args.init_from, args.max_glimpses)
        perception = warm[1] if warm else (PerceptionCore.load(args.perception, device) if args.perception else None)
    resume = ResumePoint(args.out, args, stop_after)
    out = claim_output(args.out, args.overwrite)

    batched = MnistGlimpseSB3VecEnv(
        args.num_envs,
        max_glimpses=args.max_glimpses,
        sampler=args.sampler,
        perception=perception,
        learn_perception=args.learn_perception,
        perception_lr=args.perception_lr,
        device=device,
        **({"obs_type": "record", "action_type": "pixel"} if pixel else {}),
    )
    env = VecStepFeature(batched, args.max_glimpses) if args.step_feature and not pixel else batched
    model, policy = build_model(args, env, batched, warm, out, device)
    budget = min(25, args.max_glimpses)
    probe = SubsetEvalCallback(
        policy,
        batched.core,
        args.max_glimpses,
        budget,
        size=args.eval_images,
        every=args.eval_every,
        seed=args.seed,
        device=device,
        report=say,
    )
    saved = resume.keep(ppo=PPOState(model, env), probe=probe)
    bar = StepProgressBar(f"{'maskable-' if pixel else ''}ppo") if args.progress_bar else None
    with resume:
        try:
            model.learn(  # nothing left to learn when trained: this sets up the logger the evaluation records to
                args.total_steps - model.num_timesteps,
                callback=[ResumeCallback(resume), probe] + ([bar] if bar else []),
                tb_log_name="ppo",
                reset_num_timesteps=saved is None,
            )
        finally:  # an interrupted run leaves no bar half drawn
            if bar is not None:
                bar.close()
        train_seconds = saved["train_seconds"] if resume.trained else probe.training_seconds()
        resume.final(int(model.num_timesteps), train_seconds=train_seconds)
        model.save(out / "model.zip")
        metrics = evaluate_and_write(args, resume, out, model, env, policy, batched.core, probe, train_seconds, device)
    print(summary(metrics, out, ["checkpoint.pt", "model.zip", "metrics.json", "glimpses.png", "tb/"]))
    return metrics


def evaluate_and_write(
    args: Args,
    resume: ResumePoint,
    out: Path,
    model,
    env,
    policy,
    core: PerceptionCore,
    probe: SubsetEvalCallback,
    train_seconds: float,
    device: torch.device,
) -> dict:
    """Evaluate on the 10,000 test images and write the run (:func:`run.write_agent_run`).

    :param core: the core the environment ran (its own trained copy with ``--learn-perception``).
    """
    print("evaluating on the 10,000 test images ...", flush=True)
    policy.eval()
    core = core.eval()
    nearest = accuracy_by_glimpse(policy, core, args.max_glimpses, device=device)
    for glimpses, accuracy in accuracy_table(nearest).items():
        model.logger.record(f"eval/test_accuracy_nearest_{glimpses}", accuracy)
    model.logger.dump(model.num_timesteps)
    agent = f"{'maskable-ppo-pixel' if args.action_type == 'pixel' else 'ppo'}-{core_training(args)}"
    return write_agent_run(
        resume,
        out,
        args,
        agent,
        policy,
        core,
        nearest,
        args.sampler,
        train_seconds,
        device,
        core_training=core_training(args),
        env_steps=int(model.num_timesteps),
        env_steps_per_second=round(model.num_timesteps / train_seconds, 1),
        seconds_to_80_percent=probe.seconds_to(0.8),
        seconds_to_80_percent_glimpses=min(25, args.max_glimpses),
        eval_subset_images=args.eval_images,
        eval_subset_curve=probe.curve,
        eval_seconds=round(probe.eval_seconds, 1),
        num_envs=args.num_envs,
        gamma=args.gamma,
        torch_threads=torch.get_num_threads(),
        sb3_model="model.zip",
        run_id=resume.run_id,
        checkpoint={"sb3_model": "model.zip"},
        before_metrics=env.close,
    )


#: Retired flags -> the flags that replaced them (refused with the new name: agents.cli.refuse_retired).
RETIRED = {
    "--glimpses": "--max-glimpses",
    "--hidden": "--net-arch",
    "--core": "--perception",
    "--core-training": "--learn-perception (joint; without it, frozen)",
}


if __name__ == "__main__":
    run_main(main, tyro.cli(Args, args=refuse_retired(RETIRED), description=plain_text(__doc__)))
