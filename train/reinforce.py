"""Train the REINFORCE glimpse agent on the batched environment (``agents.reinforce``).

    python train/reinforce.py                                  # frozen packaged core, 25 glimpses
    python train/reinforce.py --learn-perception              # the env trains the core too (RAM-style)
    python train/reinforce.py --reward final --total-steps 5000000
    python train/reinforce.py --action-type pixel --perception CORE.pt   # one of the 784 pixels per glimpse, on the record

Each iteration runs ``--num-envs`` lockstep episodes of ``--max-glimpses`` glimpses in
``MnistGlimpseVectorEnv`` (torch tensors, ``same_step`` autoreset) and takes one REINFORCE step on the
policy and one regression step on the baseline; with ``--learn-perception`` the env also takes one
cross-entropy step on its own core after each batch. Every ``--eval-every`` env steps the greedy
(mean) policy is evaluated on a fixed subset of the test set (nearest readout); the clock used for
``seconds_to_*`` and ``env_steps_per_second`` stops during those evaluations.

Writes ``OUT/checkpoint.pt`` (policy + the core the env ran, ``env.core``), ``OUT/metrics.json``
(nearest-pixel test accuracy after 1, 2, 5, 10, 25 glimpses, plus the sampled policy's accuracy, env
steps per second, the training seconds to the random baseline and to 80% at 25 glimpses on the subset,
and the learning curve) and ``OUT/glimpses.png``; TensorBoard logs go to ``OUT/tb``.

With ``--action-type pixel`` the policy chooses one of the pixels not read yet on the record
observation (``obs_type="record"``): a :class:`~agents.pixel_attention.PixelAttention` (the best
agent's policy class) as a categorical (:class:`agents.reinforce.PixelPolicy`); it is evaluated
through the environment, and ``--perception`` gives the environment another core than the packaged one.

The accuracies of ``reinforce-frozen`` and ``reinforce-joint`` are in docs/results.md, their training
speed in docs/studies/rl-training-speed.md.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch
import tyro
from torch.utils.tensorboard import SummaryWriter
from tqdm import tqdm

from agents.baselines import RandomGlimpses
from agents.cli import plain_text, refuse_retired, run_main, user_errors
from agents.evaluation import accuracy_by_glimpse, accuracy_on
from agents.pixel_attention import PixelAttention
from agents.reinforce import (
    GaussianAttentionPolicy,
    PixelPolicy,
    ReinforceLearner,
    SampledGlimpses,
    ValueBaseline,
    collect_rollout,
    make_env,
)
from envs.data import load_mnist
from envs.perception import PerceptionCore, load_pretrained
from envs.sampler import Sampler
from run import (
    ResumableArgs,
    ResumePoint,
    accuracy_table,
    check_rl_args,
    claim_output,
    core_training,
    log_folder,
    refuse_with_pixel_actions,
    say,
    start,
    summary,
    write_agent_run,
)

#: Test accuracy at 25 glimpses whose first crossing is timed (``seconds_to_80_at_25``).
TARGET_ACCURACY, TARGET_GLIMPSES = 0.80, 25


@dataclass
class Args(ResumableArgs):
    max_glimpses: int = 25
    """glimpses per episode (T)"""
    action_type: Literal["continuous", "pixel"] = "continuous"
    """continuous: a Gaussian (i, j) on the default observation; pixel: a categorical over the pixels not
    read yet (a PixelAttention), on the record observation"""
    perception: str | None = None
    """a perception-core checkpoint the environment runs instead of the packaged core (train/export_core.py)"""
    num_envs: int = 256
    """episodes per batch (N); one policy update per batch of N * T env steps"""
    total_steps: int = 10_000_000
    """env glimpse-steps to train for (rounded down to whole batches, at least one)"""
    learn_perception: bool = False
    """the env trains its copy with cross-entropy on the same rollouts (the environment's learn_perception);
    without it the core stays frozen (metrics.json's core_training: joint or frozen)"""
    reward: Literal["dense", "final"] = "dense"
    """dense: per-glimpse log-likelihood gain of the true class; final: 1 if the last prediction is right"""
    sampler: Literal["nearest", "bilinear", "bicubic", "gaussian"] = "nearest"
    """training read-out of the env (evaluation always uses nearest)"""
    learning_rate: float = 1e-3
    """Adam learning rate of the policy"""
    baseline_lr: float = 1e-3
    """Adam learning rate of the baseline (value head)"""
    perception_lr: float = 1e-3
    """Adam learning rate of the env's perception optimizer (joint only)"""
    gamma: float = 1.0
    """discount of the return-to-go"""
    ent_coef: float = 0.0
    """entropy bonus weight (pushes the state-independent log-std up)"""
    normalize_advantage: bool = True
    """standardise advantages over each batch"""
    baseline: bool = True
    """learn a baseline b(o_t, t); without it the advantage is the (normalised) return-to-go"""
    max_grad_norm: float = 1.0
    """gradient-norm clip of each network (<= 0: off)"""
    attention_hidden: int = 128
    """attention network width"""
    baseline_hidden: int = 64
    """baseline network width"""
    step_bias: bool = True
    """continuous actions: learned per-glimpse offsets in the attention network (a fixed sequence plus an
    adaptive correction; the pixel policy always has its per-glimpse scores)"""
    step_bias_init: Literal["spread", "uniform"] = "spread"
    """continuous actions: where the per-glimpse offsets start: spread, a sequence that covers the digit's
    box evenly (agents.baselines.spread_sequence), the same for every seed; uniform, a random fixed
    sequence drawn U(-1, 1) from the seed"""
    log_std_init: float = math.log(0.1)
    """continuous actions: initial log-std of the Gaussian policy (normalised units; 0.1 is about 1.4 pixels); the sweep behind
    the default is in experiments/results/studies/rl_noise_and_warm_start.json"""
    log_std_min: float = math.log(0.05)
    """continuous actions: lower clamp of the log-std"""
    log_std_max: float = 0.0
    """continuous actions: upper clamp of the log-std"""
    eval_every: int = 1_000_000
    """env steps between cheap evaluations on the fixed test subset"""
    eval_images: int = 2000
    """size of that fixed test subset (the first images of the test split)"""
    seed: int = 0
    """seed of python, numpy, torch and of the env's image streams"""
    out: str = "runs/reinforce"
    """output folder"""


def build_policy(args: Args, observation_size: int, device: torch.device) -> tuple[torch.nn.Module, torch.nn.Module]:
    """The policy REINFORCE trains, and the network that acts greedily, is evaluated and is saved."""
    if args.action_type == "pixel":
        attention = PixelAttention(observation_size, args.max_glimpses, args.attention_hidden, memory="pixels").to(
            device
        )
        return PixelPolicy(attention), attention
    policy = GaussianAttentionPolicy(
        observation_size,
        args.attention_hidden,
        args.max_glimpses,
        args.step_bias,
        histogram_scale=args.max_glimpses,
        log_std_init=args.log_std_init,
        log_std_min=args.log_std_min,
        log_std_max=args.log_std_max,
        step_bias_init=args.step_bias_init,
    ).to(device)
    return policy, policy


class SubsetProbe:
    """The greedy policy's test accuracy on a fixed subset along training (``learning_curve``), and
    the training seconds at which it first reached the random-glimpse baseline and the target."""

    def __init__(self, args: Args, actor: torch.nn.Module, writer: SummaryWriter, device: torch.device) -> None:
        self.args, self.actor, self.writer = args, actor, writer
        test = load_mnist("test", device)
        self.images, self.labels = test.images[: args.eval_images], test.labels[: args.eval_images]
        # The random-glimpse baseline on the subset, with the packaged core.
        random_glimpses = RandomGlimpses(torch.Generator(device).manual_seed(args.seed))
        core = load_pretrained(device, shared=True)
        self.random_baseline = float(
            accuracy_on(random_glimpses, core, self.images, self.labels, args.max_glimpses)[-1]
        )
        self.curve: list[dict] = []
        self.reached: dict[str, float | None] = {"random": None, "target": None}

    def __call__(self, core: PerceptionCore, env_steps: int, seconds: float) -> None:
        """Evaluate the greedy policy on the subset with ``core``; records first crossings."""
        self.actor.eval()
        accuracy = accuracy_on(self.actor, core, self.images, self.labels, self.args.max_glimpses)
        self.actor.train()
        final = float(accuracy[-1])
        at_target = float(accuracy[TARGET_GLIMPSES - 1]) if self.args.max_glimpses >= TARGET_GLIMPSES else None
        self.curve.append({"env_steps": env_steps, "seconds": round(seconds, 2), "accuracy_T": round(final, 4)})
        self.writer.add_scalar("eval/subset_accuracy_T", final, env_steps)
        say(
            f"step {env_steps:,}: test accuracy {100 * final:.1f}% after {self.args.max_glimpses} glimpses "
            f"on {len(self.labels):,} test images"
        )
        if self.reached["random"] is None and final >= self.random_baseline:
            self.reached["random"] = seconds
        if self.reached["target"] is None and at_target is not None and at_target >= TARGET_ACCURACY:
            self.reached["target"] = seconds

    def seconds_to(self, name: str) -> float | None:
        return None if self.reached[name] is None else round(self.reached[name], 1)


def log_batch(writer: SummaryWriter, rollout, stats, policy, env_steps: int, train_seconds: float) -> None:
    """A batch's training curves in TensorBoard."""
    writer.add_scalar("charts/episodic_return", float(rollout.episodic_return.mean()), env_steps)
    writer.add_scalar("charts/train_accuracy", float(rollout.correct.float().mean()), env_steps)
    if isinstance(policy, GaussianAttentionPolicy):
        sigma = policy.std().detach().cpu()  # detach: logging only
        writer.add_scalar("charts/policy_std_i", float(sigma[0]), env_steps)
        writer.add_scalar("charts/policy_std_j", float(sigma[1]), env_steps)
    writer.add_scalar("charts/env_steps_per_second", env_steps / train_seconds, env_steps)
    writer.add_scalar("losses/policy", stats.policy_loss, env_steps)
    writer.add_scalar("losses/baseline", stats.baseline_loss, env_steps)
    writer.add_scalar("losses/entropy", stats.entropy, env_steps)
    writer.add_scalar("losses/advantage_std", stats.advantage_std, env_steps)
    writer.add_scalar("losses/explained_variance", stats.explained_variance, env_steps)


def main(args: Args, stop_after: int | None = None) -> dict:
    """Train, evaluate and write the run. ``stop_after``: act as if interrupted after that many
    iterations (tests of --resume)."""
    check_rl_args(args, Args.perception_lr)
    refuse_with_pixel_actions(args, ("step_bias", "step_bias_init", "log_std_init", "log_std_min", "log_std_max"))
    pixel = args.action_type == "pixel"
    device = start(args, deterministic=True)
    with user_errors(
        ValueError, FileNotFoundError
    ):  # a --perception file that cannot be used: refused before any write
        start_core = PerceptionCore.load(args.perception, device) if args.perception else None
    resume = ResumePoint(args.out, args, stop_after)
    out = claim_output(args.out, args.overwrite)
    writer = SummaryWriter(str(log_folder(out)))
    writer.add_text(
        "hyperparameters", "|param|value|\n|-|-|\n" + "\n".join(f"|{k}|{v}|" for k, v in vars(args).items())
    )

    env = make_env(
        args.num_envs,
        args.max_glimpses,
        args.learn_perception,
        args.perception_lr,
        args.sampler,
        args.reward,
        device,
        perception=start_core,
        action_type=args.action_type,
    )
    size = env.core.observation_size
    policy, actor = build_policy(args, size, device)
    baseline = (
        ValueBaseline(size, args.max_glimpses, args.baseline_hidden, args.max_glimpses).to(device)
        if args.baseline
        else None
    )
    learner = ReinforceLearner(
        policy,
        baseline,
        args.learning_rate,
        args.baseline_lr,
        args.gamma,
        args.ent_coef,
        args.normalize_advantage,
        args.max_grad_norm,
    )
    probe = SubsetProbe(args, actor, writer, device)
    batch_steps = args.num_envs * args.max_glimpses
    iterations = max(1, args.total_steps // batch_steps)
    eval_interval = max(1, args.eval_every // batch_steps)

    observation, _ = env.reset(seed=args.seed)
    first, train_seconds = 0, 0.0
    saved = resume.keep(
        learner=learner,
        env=env,
        iteration=lambda: iteration,
        train_seconds=lambda: train_seconds,
        curve=probe.curve,
        reached=probe.reached,
    )
    if saved is None:
        probe(env.core, 0, 0.0)
    else:  # what the last step returned (same_step autoreset)
        observation = env.sim.record_observation() if pixel else env.sim.observation()
        first, train_seconds = saved["iteration"], saved["train_seconds"]
    progress = tqdm(
        total=iterations * batch_steps,
        initial=first * batch_steps,
        desc=f"reinforce {core_training(args)}",
        unit="step",
        unit_scale=True,
    )
    with resume:
        with progress:
            for iteration in range(first, iterations):
                resume.step(iteration)
                began = time.perf_counter()
                rollout, observation = collect_rollout(env, policy, observation)
                stats = learner.update(rollout)
                if device.type == "cuda":
                    torch.cuda.synchronize(device)
                train_seconds += time.perf_counter() - began
                env_steps = (iteration + 1) * batch_steps
                log_batch(writer, rollout, stats, policy, env_steps, train_seconds)
                progress.update(batch_steps)
                shown = dict(
                    ret=f"{float(rollout.episodic_return.mean()):.3f}",
                    acc=f"{float(rollout.correct.float().mean()):.3f}",
                )
                progress.set_postfix(**shown, entropy=f"{stats.entropy:.3f}")
                if (iteration + 1) % eval_interval == 0 or iteration + 1 == iterations:
                    probe(env.core, env_steps, train_seconds)
                    progress.set_postfix(**shown, test=f"{probe.curve[-1]['accuracy_T']:.3f}")
        iteration = iterations  # the state after the last batch
        resume.final(iterations)
        metrics = evaluate_and_write(
            args, resume, out, writer, env.core, policy, actor, probe, iterations * batch_steps, train_seconds, device
        )
    print(summary(metrics, out, ["checkpoint.pt", "metrics.json", "glimpses.png", "tb/"]))
    return metrics


def evaluate_and_write(
    args: Args,
    resume: ResumePoint,
    out: Path,
    writer: SummaryWriter,
    core: PerceptionCore,
    policy: torch.nn.Module,
    actor: torch.nn.Module,
    probe: SubsetProbe,
    env_steps: int,
    train_seconds: float,
    device: torch.device,
) -> dict:
    """Evaluate on the 10,000 test images and write the run (:func:`run.write_agent_run`).

    :param core: the core the env ran: packaged (frozen) or the env's own trained copy (joint).
    """
    pixel = args.action_type == "pixel"
    print("evaluating on the 10,000 test images ...", flush=True)
    actor.eval()
    nearest = accuracy_by_glimpse(actor, core, args.max_glimpses, device=device)
    sampled = None if pixel else accuracy_by_glimpse(SampledGlimpses(policy), core, args.max_glimpses, device=device)
    for budget, value in accuracy_table(nearest).items():
        writer.add_scalar("eval/test_accuracy_nearest", value, int(budget))
    agent = f"reinforce-{'pixel-' if pixel else ''}{core_training(args)}"
    return write_agent_run(
        resume,
        out,
        args,
        agent,
        actor,
        core,
        nearest,
        Sampler(args.sampler).name,
        train_seconds,
        device,
        core_training=core_training(args),
        reward=args.reward,
        num_envs=args.num_envs,
        env_steps=env_steps,
        env_steps_per_second=round(env_steps / train_seconds, 1),
        random_baseline_accuracy=round(probe.random_baseline, 4),
        seconds_to_random_baseline=probe.seconds_to("random"),
        seconds_to_80_at_25=probe.seconds_to("target"),
        eval_images=args.eval_images,
        test_accuracy_sampled=None if sampled is None else accuracy_table(sampled),
        # detach: reporting only
        policy_std=None if pixel else [round(float(s), 4) for s in policy.std().detach().cpu()],
        learning_curve=probe.curve,
        torch_threads=torch.get_num_threads(),
        run_id=resume.run_id,
        before_metrics=writer.close,
    )


#: Retired flags -> the flags that replaced them (refused with the new name: agents.cli.refuse_retired).
RETIRED = {
    "--glimpses": "--max-glimpses",
    "--hidden": "--attention-hidden",
    "--core": "--perception",
    "--core-training": "--learn-perception (joint; without it, frozen)",
}


if __name__ == "__main__":
    run_main(main, tyro.cli(Args, args=refuse_retired(RETIRED), description=plain_text(__doc__)))
