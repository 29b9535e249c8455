"""What the recipes share: their flags, the test score at 25 glimpses, and the JSON record of a run.

Each recipe trains with one outside library on ``gymnasium.make("MnistGlimpse-v0", ...)`` and scores
its policy the same way: one batched environment of the first ``--test-images`` test images, 25 glimpses
each, the policy's greedy action at every step, and the fraction of digits the environment's core names
correctly at the end (``info["correct"]``).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import sys
import time
from collections.abc import Callable
from importlib.metadata import version
from pathlib import Path

import gymnasium as gym
import numpy as np
import torch

import envs

gym.register_envs(envs)
GLIMPSES = 25


def parse_args(
    description: str, total_steps: int, add_arguments: Callable[[argparse.ArgumentParser], None] | None = None
) -> argparse.Namespace:
    """The flags every recipe takes; sets the torch threads and seeds torch and numpy.

    :param description: the recipe's one-line ``--help`` description.
    :param total_steps: the default training budget in environment steps.
    :param add_arguments: adds a recipe's own flags to the parser.
    """
    parser = argparse.ArgumentParser(description=description)
    if add_arguments is not None:
        add_arguments(parser)
    parser.add_argument("--total-steps", type=int, default=total_steps, help="environment steps of training")
    parser.add_argument("--seed", type=int, default=0, help="seed of the training environment and the networks")
    parser.add_argument("--test-images", type=int, default=10_000, help="test images the policy is scored on")
    parser.add_argument("--torch-threads", type=int, default=1, help="CPU threads for torch")
    parser.add_argument("--out", default=None, help="also write the figure, the command and the machine to this JSON")
    args = parser.parse_args()
    if args.total_steps < 0 or args.test_images < 1:
        parser.error("--total-steps must be >= 0 and --test-images >= 1")
    torch.set_num_threads(args.torch_threads)
    torch.manual_seed(args.seed)
    np.random.seed(args.seed)
    args.start, args.start_cpu = time.time(), time.process_time()
    return args


@torch.no_grad()
def test_accuracy(act: Callable, images: int = 10_000, seed: int = 0, **env_kwargs) -> float:
    """Fraction of the first ``images`` test digits named correctly after 25 glimpses.

    :param act: ``act(obs, masks) -> actions`` for a batch: ``obs`` as the environment returns it
        (an array, or a dict of arrays for ``obs_type="record"``), ``masks`` the ``(N, 784)`` unread
        pixels for ``action_type="pixel"``, else ``None``.
    :param images: how many test images (one episode each, all in one batch).
    :param seed: the environment's seed (the test images are fixed by ``index``; the seed only matters
        for a random sampler).
    :param env_kwargs: the environment's arguments, as in training.
    """
    vec = gym.make_vec(
        "MnistGlimpse-v0",
        num_envs=images,
        vectorization_mode="vector_entry_point",
        **{**env_kwargs, "split": "test", "max_glimpses": GLIMPSES, "device": "cpu"},
    )
    obs, _ = vec.reset(seed=seed, options={"index": np.arange(images)})
    pixel = env_kwargs.get("action_type") == "pixel"
    for _ in range(GLIMPSES):
        obs, _, _, _, info = vec.step(act(obs, vec.action_masks() if pixel else None))
    return float(info["correct"].mean())


def report(args: argparse.Namespace, library: str, accuracy: float, env_kwargs: dict) -> None:
    """Print the test accuracy and, with ``--out``, write it with the command and the machine as JSON.

    :param library: the distribution name of the library the recipe trains with (for its version).
    :param accuracy: :func:`test_accuracy`'s result.
    :param env_kwargs: the environment's arguments, recorded beside the figure.
    """
    seconds = time.time() - args.start
    print(f"{library}: test accuracy at {GLIMPSES} glimpses {100 * accuracy:.1f}% ({args.test_images} test images)")
    if args.out is None:
        return
    record = {
        "library": library,
        "library_version": version(library),
        "accuracy_25": round(accuracy, 4),
        "total_steps": args.total_steps,
        "seed": args.seed,
        "test_images": args.test_images,
        "env_kwargs": env_kwargs,
        "wall_seconds": round(seconds, 1),  # training and test, on a machine shared with other jobs
        "cpu_seconds": round(time.process_time() - args.start_cpu, 1),  # this process's CPU time
        "command": "python " + shlex.join([os.path.relpath(sys.argv[0]), *sys.argv[1:]]),
        "machine": {
            "cpu_count": os.cpu_count(),
            "torch_threads": args.torch_threads,
            "platform": platform.platform(),
            "python": platform.python_version(),
            "torch": torch.__version__,
            "gymnasium": gym.__version__,
        },
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(record, indent=2) + "\n")
