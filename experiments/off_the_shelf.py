"""Do off-the-shelf algorithms learn on ``MnistGlimpse-v0``? Stable-Baselines3 PPO and SAC with their
default hyperparameters, on the environment as a user makes it, against the random policy.

    python experiments/off_the_shelf.py                                     # PPO and SAC, 200k steps, seeds 0 1 2
    python experiments/off_the_shelf.py --algos ppo --steps 20000 --seeds 0 --out /tmp/ots
    python experiments/off_the_shelf.py --algos maskable-ppo                # the record and pixel actions
    python experiments/off_the_shelf.py --algos ppo-record                  # the record, continuous actions

Each run trains ``ALGO("MlpPolicy", env)`` for ``--steps`` environment steps on
``TimeAwareObservation(gymnasium.make("MnistGlimpse-v0"), normalize_time=True)`` (the documented
configuration: the observation plus the glimpse counter ``t / 25``) or, with ``--plain``, on
``gymnasium.make("MnistGlimpse-v0")`` alone; ``maskable-ppo`` and ``ppo-record`` train
``MultiInputPolicy`` on the record observation (``obs_type="record"``, which carries the glimpse
count), with pixel actions (masked to the unread pixels) or continuous ones. It is then scored with its
deterministic policy on the 10,000 test images (``--test-images``), in the same environment (bilinear
read-out, the packaged core), batched: one :class:`~envs.vector_env.MnistGlimpseVectorEnv` of all
the episodes. The random policy is scored the
same way. Each run writes ``OUT/<algo>[-plain][-normalized]/seed<k>.json``; a run whose file exists
is skipped, so an interrupted call resumes. It prints the table of this call's configuration.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import gymnasium as gym
import numpy as np
import torch
import tyro
from gymnasium.wrappers import NormalizeObservation, TimeAwareObservation

import envs  # noqa: F401 - registers MnistGlimpse-v0
from agents.cli import UserValueError, plain_text, run_main
from envs.vector_env import MnistGlimpseVectorEnv

BUDGETS = (1, 2, 5, 10, 25)
GLIMPSES = 25


@dataclass
class Args:
    algos: tuple[Literal["ppo", "sac", "maskable-ppo", "ppo-record"], ...] = ("ppo", "sac")
    """SB3 algorithms to run, each with its default hyperparameters: ppo and sac with MlpPolicy on the
    default observation; maskable-ppo (sb3-contrib) with MultiInputPolicy on the record observation
    and pixel actions (obs_type="record", action_type="pixel"), masked to the pixels not read yet;
    ppo-record, PPO with MultiInputPolicy on the record observation and continuous actions"""
    seeds: tuple[int, ...] = (0, 1, 2)
    """seeds of every algorithm"""
    steps: int = 200_000
    """environment steps of each run"""
    plain: bool = False
    """train on the environment without the glimpse counter"""
    normalize: bool = False
    """also wrap the environment in gymnasium.wrappers.NormalizeObservation (under the glimpse counter)"""
    out: str = "experiments/results/off_the_shelf"
    """runs go to OUT/<algo>[-plain]/seed<k>.json"""
    torch_threads: int = 1
    """CPU threads for torch"""
    test_images: int = 10_000
    """test images each policy is scored on (the first ones of the test split)"""
    perception: str | None = None
    """a perception-core checkpoint the environment runs (perception=); default: the packaged core"""


@torch.no_grad()
def test_accuracy(
    act, time_feature: bool, seed: int, normalize=None, images: int = 10_000, perception: str | None = None
) -> dict[str, float]:
    """Accuracy after 1, 2, 5, 10 and 25 glimpses on the 10,000 test images; ``act(obs (N, D)) -> (N, 2)``;
    ``normalize``: the training env's ``NormalizeObservation`` statistics, applied to the observation;
    ``perception``: the environment's core (default: the packaged one)."""
    vec = MnistGlimpseVectorEnv(images, GLIMPSES, split="test", device="cpu", perception=perception)
    obs, _ = vec.reset(options={"index": np.arange(images)}, seed=seed)
    labels = vec.sim.labels.cpu().numpy()
    correct = {}
    for t in range(GLIMPSES):
        features = obs if normalize is None else (obs - normalize.mean) / np.sqrt(normalize.var + 1e-8)
        if time_feature:
            features = np.concatenate([features, np.full((len(obs), 1), t / GLIMPSES)], 1).astype(np.float32)
        obs, *_ = vec.step(act(features))  # the last step returns the last observation (next_step autoreset)
        if t + 1 in BUDGETS:
            correct[str(t + 1)] = round(float((obs[:, -10:].argmax(1) == labels).mean()), 4)
    return correct


#: The documented configuration of ``maskable-ppo``: the record of the pixels read, one pixel per action.
RECORD = {"obs_type": "record", "action_type": "pixel"}
#: ``ppo-record``'s: the record, continuous actions.
RECORD_CONTINUOUS = {"obs_type": "record"}


@torch.no_grad()
def test_accuracy_record(
    act, seed: int, env_kwargs: dict = RECORD, images: int = 10_000, perception: str | None = None
) -> dict[str, float]:
    """As :func:`test_accuracy`, on the record observation (``env_kwargs``: ``RECORD``, or
    ``RECORD_CONTINUOUS``); ``act(obs dict, masks) -> (N,)`` pixels (masks ``(N, 784)``: the unread pixels)
    or ``(N, 2)`` locations (masks ``None``)."""
    vec = MnistGlimpseVectorEnv(images, GLIMPSES, split="test", device="cpu", perception=perception, **env_kwargs)
    obs, _ = vec.reset(options={"index": np.arange(images)}, seed=seed)
    labels = vec.sim.labels.cpu().numpy()
    correct = {}
    for t in range(GLIMPSES):
        masks = vec.action_masks() if vec.action_type == "pixel" else None
        obs, *_ = vec.step(act(obs, masks))
        if t + 1 in BUDGETS:
            correct[str(t + 1)] = round(float((obs["summary"][:, -10:].argmax(1) == labels).mean()), 4)
    return correct


def run_record(algo: str, seed: int, args: Args) -> dict:
    """``maskable-ppo`` (pixel actions, masked) or ``ppo-record`` (continuous actions) on the record."""
    from sb3_contrib import MaskablePPO
    from stable_baselines3 import PPO

    pixel = algo == "maskable-ppo"
    kwargs = RECORD if pixel else RECORD_CONTINUOUS
    model = (MaskablePPO if pixel else PPO)(
        "MultiInputPolicy", gym.make("MnistGlimpse-v0", perception=args.perception, **kwargs), seed=seed, verbose=0
    )
    start = time.time()
    model.learn(total_timesteps=args.steps)
    seconds = time.time() - start
    results = {}
    for deterministic in (True, False):
        if pixel:
            act = lambda o, m, d=deterministic: model.predict(o, action_masks=m, deterministic=d)[0]  # noqa: E731
        else:
            act = lambda o, m, d=deterministic: model.predict(o, deterministic=d)[0]  # noqa: E731
        results[deterministic] = test_accuracy_record(act, seed, kwargs, args.test_images, args.perception)
    return {
        "algo": algo,
        "seed": seed,
        "steps": args.steps,
        "env_kwargs": kwargs,
        "perception": args.perception,
        "test_accuracy": results[True],
        "test_accuracy_sampled": results[False],
        "train_seconds": round(seconds, 1),
    }


def run(algo: str, seed: int, args: Args) -> dict:
    from stable_baselines3 import PPO, SAC

    if algo in ("maskable-ppo", "ppo-record"):
        return run_record(algo, seed, args)

    env = gym.make("MnistGlimpse-v0", perception=args.perception)
    statistics = None
    if args.normalize:
        env = NormalizeObservation(env)
        statistics = env.obs_rms  # the running mean and variance it learned, applied again at test time
    if not args.plain:
        env = TimeAwareObservation(env, normalize_time=True)
    model = {"ppo": PPO, "sac": SAC}[algo]("MlpPolicy", env, seed=seed, verbose=0)
    start = time.time()
    model.learn(total_timesteps=args.steps)
    seconds = time.time() - start
    accuracy, sampled = (
        test_accuracy(
            lambda o, d=deterministic: model.predict(o, deterministic=d)[0],
            not args.plain,
            seed,
            statistics,
            args.test_images,
            args.perception,
        )
        for deterministic in (True, False)
    )
    return {
        "algo": algo,
        "seed": seed,
        "steps": args.steps,
        "time_feature": not args.plain,
        "normalize": args.normalize,
        "perception": args.perception,
        "test_accuracy": accuracy,
        "test_accuracy_sampled": sampled,
        "train_seconds": round(seconds, 1),
    }


def main(args: Args) -> None:
    torch.set_num_threads(args.torch_threads)
    out = Path(args.out)
    rng = np.random.default_rng(0)
    record = {"maskable-ppo", "ppo-record"} & set(args.algos)
    if record and (args.plain or args.normalize):
        raise UserValueError(f"{sorted(record)} run on the record observation as it is: drop --plain and --normalize.")
    random = {
        "algo": "random",
        "perception": args.perception,
        "test_accuracy": test_accuracy(
            lambda o: rng.uniform(-1, 1, (len(o), 2)), False, 0, images=args.test_images, perception=args.perception
        ),
    }
    out.mkdir(parents=True, exist_ok=True)
    (out / "random.json").write_text(json.dumps(random, indent=2) + "\n")
    rows = {"random policy": [random]}
    if "maskable-ppo" in args.algos:  # a pixel not read yet, uniformly: the random policy of that configuration
        pick = lambda o, m: np.argmax(rng.random(m.shape) * m, axis=1)  # noqa: E731
        random_pixels = {
            "algo": "random-pixels",
            "env_kwargs": RECORD,
            "perception": args.perception,
            "test_accuracy": test_accuracy_record(pick, 0, images=args.test_images, perception=args.perception),
        }
        (out / "random_pixels.json").write_text(json.dumps(random_pixels, indent=2) + "\n")
        rows["random unread pixel (record, pixel actions)"] = [random_pixels]
    for algo in args.algos:
        name = algo + ("-plain" if args.plain else "") + ("-normalized" if args.normalize else "")
        for seed in args.seeds:
            path = out / name / f"seed{seed}.json"
            if not path.is_file():
                print(f"{name} seed {seed}: training {args.steps:,} steps ...", flush=True)
                result = run(algo, seed, args)
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text(json.dumps(result, indent=2) + "\n")
            setting = {"maskable-ppo": "record, pixel actions", "ppo-record": "record, continuous actions"}.get(
                algo, "plain" if args.plain else "with the glimpse counter"
            )
            rows.setdefault(f"{name} ({setting})", []).append(json.loads(path.read_text()))
    lines = ["| policy | runs | " + " | ".join(map(str, BUDGETS)) + " |", "|---|--:|" + "--:|" * len(BUDGETS)]
    for label, results in rows.items():
        cells = []
        for b in BUDGETS:
            values = 100 * np.array([r["test_accuracy"][str(b)] for r in results])
            cells.append(f"{values.mean():.1f}" + (f" ± {values.std(ddof=1):.1f}" if len(values) > 1 else ""))
        lines.append(f"| {label} | {len(results)} | " + " | ".join(cells) + " |")
    print("\n".join(lines))


if __name__ == "__main__":
    run_main(main, tyro.cli(Args, description=plain_text(__doc__)))
