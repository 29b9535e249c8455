"""Train the differentiable end-to-end glimpse agent with its two optimizers.

    python train/differentiable.py                                  # label target, 25 glimpses
    python train/differentiable.py --attention-target second
    python train/differentiable.py --policy fixed                   # learned fixed-sequence baseline
    python train/differentiable.py --policy pixel --attention-lr 1e-2 --pixel-noise-final 0.1 --epochs 5
                                                                    # choose among the 784 pixels (README)

Training runs ``--epochs`` of both optimizers with the training read-out (bilinear), then
``--readout-epochs`` of the perception optimizer alone on nearest reads of the policy's glimpses, so
the core is tuned to the read-out it is evaluated with.

Writes ``OUT/checkpoint.pt`` (attention + core), ``OUT/metrics.json`` (nearest-pixel test accuracy
after 1, 2, 5, 10, 25 glimpses) and ``OUT/glimpses.png``; TensorBoard logs go to ``OUT/tb``.
"""

from __future__ import annotations

import math
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch
import tyro
from torch.utils.tensorboard import SummaryWriter
from tqdm import tqdm

from agents.attention import AttentionNetwork
from agents.baselines import FixedSequence
from agents.checkpoint import save_agent
from agents.differentiable import DualOptimizerTrainer
from agents.evaluation import accuracy_by_glimpse, accuracy_table, write_metrics
from agents.figures import plot_glimpse_trails
from agents.pixel_attention import PixelAttention
from envs.config import resolve_device
from envs.data import load_mnist, shuffled_batches
from envs.perception import RANDOM_GLIMPSES_PATH, PerceptionConfig, PerceptionCore
from envs.sampler import Sampler


@dataclass
class Args:
    glimpses: int = 25
    """glimpses per episode (T)"""
    policy: Literal["attention", "pixel", "fixed"] = "attention"
    """adaptive attention network (continuous locations), adaptive choice among the 784 pixel centres
    (agents.pixel_attention, straight-through Gumbel-softmax in training), or a learned fixed
    (non-adaptive) sequence of T locations"""
    pixel_temperature: float = 1.0
    """temperature of --policy pixel's Gumbel-softmax relaxation"""
    pixel_candidates: int = 16
    """--policy pixel: K, the top-K Gumbel-perturbed pixels whose increments the training relaxation mixes"""
    pixel_repeat_penalty: float = 0.0
    """--policy pixel: weight of the penalty on looking again at a pixel already read
    (PixelAttention.repeat_probability) in the attention loss"""
    pixel_noise_final: float = 1.0
    """--policy pixel: scale of the training Gumbel noise at the end of the dual epochs, annealed
    linearly from 1 (sampling from the policy) towards 0 (its argmax, what acting takes)"""
    pixel_memory: Literal["none", "pixels"] = "none"
    """--policy pixel: "pixels" lets the policy see the pixels it has read (mask and grey levels, the
    masked image GDFS's selector sees) and never read one twice; it then runs outside the environment
    only (its observation has no grey levels). See README"""
    pixel_estimator: Literal["mixture", "taken"] = "mixture"
    """--policy pixel: what learns from the relaxed choice among the candidate pixels: "mixture" (the
    scores, the core and the earlier glimpses) or "taken" (the scores only, the standard straight-through
    Gumbel-softmax: the core learns from the glimpses taken; agents.rollout.look). See README"""
    step_bias: bool = True
    """add a learned per-glimpse offset to the attention output (fixed sequence + adaptive correction)"""
    attention_target: Literal["argmin", "second", "label"] = "label"
    """class the attention optimizer pushes the prediction toward (argmin and second measured far
    worse than label: see README)"""
    attention_credit: Literal["episode", "greedy"] = "episode"
    """which losses train a glimpse's choice: its own and all later ones (episode), or its own only (greedy, as GDFS)"""
    loss_on: Literal["all", "last"] = "all"
    """losses over the logits of all glimpses or of the last one"""
    sampler: Literal["bilinear", "bicubic", "gaussian", "nearest"] = "bilinear"
    """training read-out (evaluation always uses nearest)"""
    sampler_gradient: Literal["bilinear", "bicubic", "gaussian"] | None = None
    """straight-through: read with --sampler, but take the location gradient from this kernel"""
    location_noise: float = 0.0
    """std of Gaussian jitter on training glimpse locations (normalised units; 0 = off)"""
    core: str = "random-glimpses"
    """start the perception core from the packaged core trained on random glimpses (a warm-up,
    "random-glimpses"), from a fresh init ("scratch"), or from a perception-core checkpoint PATH (e.g.
    one of another size, written by train/pretrain_perception.py)"""
    channels: int = 32
    """RecurrentSoftOrdering channels of a --core scratch (an error with another --core)"""
    n_bins: int = 4
    """soft bins per channel of a --core scratch (an error with another --core)"""
    encoding: Literal["plain", "fourier", "learned"] = "plain"
    """glimpse encoding of a --core scratch (envs.perception.GlimpseEncoding; an error with another --core)"""
    epochs: int = 15
    """passes over the 60,000 training images (15: about 5 minutes on 2 CPU cores; train/compare.py
    runs 5 to keep its 30 runs short)"""
    readout_epochs: float = 1.0
    """after --epochs, passes that train only the core (perception optimizer, policy fixed) on nearest
    reads of the policy's own glimpses, the evaluation read-out (0 = off); see README"""
    max_train_seconds: float = 0.0
    """stop the dual-optimizer epochs after this many seconds of wall clock, mid-epoch if need be
    (0 = no limit); the read-out epochs still run; the steps actually taken are in metrics.json"""
    batch_size: int = 256
    """images per optimizer step"""
    perception_lr: float = 1e-3
    """Adam learning rate of the perception optimizer"""
    attention_lr: float = 1e-3
    """Adam learning rate of the attention optimizer"""
    lr_final: float = 1.0
    """both learning rates at the end of the dual epochs, as a fraction of --perception-lr and
    --attention-lr, annealed linearly (1 = constant); the read-out epochs keep the final rate"""
    hidden: int = 128
    """attention network width"""
    seed: int = 0
    """seed of python, numpy and torch"""
    device: str = "auto"
    """cpu, cuda or auto"""
    torch_threads: int = 0
    """CPU threads for torch (0 = torch's default); 1 is much faster on a CPU shared with other jobs"""
    out: str = "runs/differentiable"
    """output folder"""


def check_args(args: Args) -> None:
    """Refuse, before any work, options that are out of range or that the chosen --policy / --core would ignore."""
    if args.max_train_seconds < 0:
        raise ValueError(f"--max-train-seconds must be >= 0 (0 = no limit), got {args.max_train_seconds}.")
    if args.readout_epochs < 0:
        raise ValueError(f"--readout-epochs must be >= 0 (0 = off), got {args.readout_epochs}.")
    if not args.lr_final > 0:
        raise ValueError(f"--lr-final must be > 0 (1 = constant learning rates), got {args.lr_final}.")
    if args.core not in ("scratch", "random-glimpses") and not Path(args.core).is_file():
        raise ValueError(f"--core {args.core}: not random-glimpses, scratch or an existing file; pass the path of a "
                         "perception-core checkpoint (train/pretrain_perception.py --out PATH writes one).")
    defaults = Args()
    for name in ("channels", "n_bins", "encoding"):
        value, flag = getattr(args, name), "--" + name.replace("_", "-")
        if value != getattr(defaults, name) and args.core != "scratch":
            raise ValueError(f"{flag} {value} sizes a --core scratch; --core {args.core} brings its own size. Pass "
                             "--core scratch, or pretrain a core of that size (train/pretrain_perception.py) and pass its path.")
    for name in ("pixel_memory", "pixel_estimator", "pixel_candidates"):
        value, flag = getattr(args, name), "--" + name.replace("_", "-")
        if value != getattr(defaults, name) and args.policy != "pixel":
            raise ValueError(f"{flag} {value} is an option of --policy pixel, not of --policy {args.policy}.")


def main(args: Args) -> dict:
    check_args(args)
    random.seed(args.seed)
    np.random.seed(args.seed)
    torch.manual_seed(args.seed)
    if args.torch_threads:
        torch.set_num_threads(args.torch_threads)
    device = resolve_device(args.device)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    writer = SummaryWriter(str(out / "tb"))

    data = load_mnist("train", device)
    if args.core == "scratch":
        core = PerceptionCore(PerceptionConfig(args.channels, args.n_bins, encoding=args.encoding)).to(device)
    else:
        core = PerceptionCore.load(RANDOM_GLIMPSES_PATH if args.core == "random-glimpses" else args.core, device).train()
    if args.policy == "attention":
        policy = AttentionNetwork(core.observation_size, args.hidden, args.glimpses, args.step_bias).to(device)
    elif args.policy == "pixel":
        policy = PixelAttention(
            core.observation_size,
            args.glimpses,
            args.hidden,
            args.pixel_temperature,
            candidates=args.pixel_candidates,
            memory=args.pixel_memory,
        ).to(device)
    else:
        policy = FixedSequence(args.glimpses).to(device)
    sampler = Sampler(args.sampler, gradient=args.sampler_gradient)
    trainer = DualOptimizerTrainer(
        policy,
        core,
        sampler,
        args.glimpses,
        attention_target=args.attention_target,
        loss_on=args.loss_on,
        perception_lr=args.perception_lr,
        attention_lr=args.attention_lr,
        location_noise=args.location_noise,
        repeat_penalty=args.pixel_repeat_penalty,
        pixel_estimator=args.pixel_estimator,
        attention_credit=args.attention_credit,
    )

    steps_per_epoch = len(data) // args.batch_size
    readout = Sampler("nearest")
    schedule = {"dual": args.epochs * steps_per_epoch, "readout": round(args.readout_epochs * steps_per_epoch)}
    steps_done = dict.fromkeys(schedule, 0)
    batches = shuffled_batches(len(data), args.batch_size, device)
    start = time.time()
    deadline = start + args.max_train_seconds if args.max_train_seconds > 0 else math.inf
    progress = tqdm(total=sum(schedule.values()), desc=f"differentiable {args.policy}/{args.attention_target}")
    for phase, phase_steps in schedule.items():
        for _ in range(phase_steps):
            if phase == "dual" and time.time() > deadline:
                break
            batch = next(batches)
            images, labels = data.images[batch].float() / 255.0, data.labels[batch]
            global_step = sum(steps_done.values())
            if phase == "dual":
                done = steps_done["dual"] / schedule["dual"]  # linear schedules over the dual epochs
                if isinstance(policy, PixelAttention):
                    policy.noise = 1.0 - (1.0 - args.pixel_noise_final) * done
                if args.lr_final != 1.0:
                    trainer.scale_learning_rates(1.0 - (1.0 - args.lr_final) * done)
                stats = trainer.step(images, labels)
                if global_step % 50 == 0:
                    writer.add_scalar("losses/perception", stats.perception_loss, global_step)
                    writer.add_scalar("losses/attention", stats.attention_loss, global_step)
                    writer.add_scalar("charts/train_accuracy_last", stats.accuracy_last, global_step)
                    progress.set_postfix(loss=f"{stats.perception_loss:.3f}", acc=f"{stats.accuracy_last:.3f}")
            else:
                loss = trainer.readout_step(images, labels, readout)
                if global_step % 50 == 0:
                    writer.add_scalar("losses/perception_nearest_readout", loss, global_step)
                    progress.set_postfix(phase="readout", loss=f"{loss:.3f}")
            progress.update()
            steps_done[phase] += 1
    progress.close()
    train_seconds = time.time() - start

    policy.eval()
    core.eval()
    nearest = accuracy_by_glimpse(policy, core, args.glimpses, device=device)
    trained_readout = accuracy_by_glimpse(policy, core, args.glimpses, sampler=sampler, device=device)
    for budget, accuracy in accuracy_table(nearest).items():
        writer.add_scalar("eval/test_accuracy_nearest", accuracy, int(budget))
    agent = {"attention": "differentiable", "pixel": "differentiable-pixel", "fixed": "fixed-sequence"}[args.policy]
    save_agent(out / "checkpoint.pt", agent, policy, core, args.glimpses, args=vars(args))
    metrics = write_metrics(
        out / "metrics.json",
        agent,
        nearest,
        sampler.name,
        train_seconds,
        str(device),
        args.seed,
        attention_target=args.attention_target if args.policy != "fixed" else None,
        test_accuracy_train_sampler=accuracy_table(trained_readout),
        epochs=args.epochs,
        optimizer_steps=steps_done["dual"],
        epochs_done=round(steps_done["dual"] / steps_per_epoch, 2),
        readout_epochs=args.readout_epochs,
        readout_steps=steps_done["readout"],
    )
    plot_glimpse_trails(policy, core, args.glimpses, out / "glimpses.png", device=device)
    writer.close()
    print(f"nearest-pixel test accuracy: {metrics['test_accuracy']}; {sampler.name}: {metrics['test_accuracy_train_sampler']}")
    return metrics


if __name__ == "__main__":
    main(tyro.cli(Args))
