"""Glimpse-steps per second of the ``MnistGlimpse-v0`` implementations.

Three ways to run the same episodes (the perception core runs inside each env, so it is measured):

* ``single``: one :class:`envs.MnistGlimpseEnv` stepped in a Python loop (reset by hand when it ends);
* ``SyncVectorEnv``: Gymnasium's :class:`gymnasium.vector.SyncVectorEnv` of ``N`` single envs (sharing
  one perception core, the baseline's best case);
* ``MnistGlimpseVectorEnv``: the batched env, ``N`` episodes as one batch of tensors, on CPU and CUDA.

Each configuration is warmed up, then stepped for a fixed wall-clock budget (``--seconds``); the
result is glimpses taken divided by the time elapsed. Actions are random and generated ahead of time
on the env's device (a pool that is cycled), so drawing them is not measured. Autoreset happens inside
the timed loop as in training: with ``next_step`` autoreset (Gymnasium's default) one call in
``max_glimpses + 1`` only resets and takes no glimpse, and is not counted as a step. On CUDA the clock
is read after ``torch.cuda.synchronize()``. The table's last column is batched / SyncVectorEnv at the
same ``N``, against the sync run on the same device if there is one, else on CPU.

    python benchmarks/env_throughput.py                                   # the full default grid
    python benchmarks/env_throughput.py --seconds 1 --num-envs 64 1024 --json runs/env_throughput.json

Recorded runs are in ``experiments/results/speed/`` (``env_throughput_*.json``), discussed in
docs/studies/env-throughput.md.
"""

from __future__ import annotations

import json
import os
import platform
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path
from typing import Literal

import gymnasium
import numpy as np
import torch
import tyro
from gymnasium.vector import AutoresetMode, SyncVectorEnv

from agents.cli import plain_text, run_main
from envs.glimpse_env import MnistGlimpseEnv
from envs.perception import PerceptionCore, load_pretrained
from envs.vector_env import MnistGlimpseVectorEnv


@dataclass
class Args:
    seconds: float = 3.0
    """wall-clock budget of the timed part of each configuration, in seconds"""
    warmup_seconds: float = 0.5
    """untimed stepping before each timed part (at least one full episode is always run)"""
    num_envs: tuple[int, ...] = (64, 1024, 16384)
    """batch sizes N of the batched MnistGlimpseVectorEnv"""
    sync_num_envs: tuple[int, ...] = (64, 1024)
    """batch sizes N of the SyncVectorEnv baseline (one Python env per sub-env: keep these small)"""
    devices: tuple[Literal["cpu", "cuda"], ...] = ("cpu", "cuda")
    """devices of the batched env; cuda is skipped (with a note) when torch.cuda.is_available() is False"""
    baseline_devices: tuple[Literal["cpu", "cuda"], ...] = ("cpu",)
    """devices of the single-env and SyncVectorEnv baselines"""
    max_glimpses: int = 25
    """episode length T"""
    sampler: str = "bilinear"
    """glimpse sampler: nearest, bilinear, bicubic or gaussian"""
    autoreset_mode: Literal["next_step", "same_step"] = "next_step"
    """autoreset mode of the vector envs (next_step is Gymnasium's default)"""
    action_pool: int = 128
    """how many steps of random actions to pre-generate and cycle through"""
    torch_threads: int = 0
    """torch intra-op threads on CPU (0: torch's default; on a small machine shared with other work, 1 is
    far steadier: small ops with 2 threads collapse when a core is taken)"""
    seed: int = 0
    """seed of the envs and of the action pool"""
    perception: str | None = None
    """a perception-core checkpoint the envs run instead of the packaged core (the core's size sets the
    cost of a glimpse: e.g. envs/pretrained/perception_random_glimpses.pt, 32x4 plain)"""
    json: str | None = None
    """if given, also write the machine description and the results to this JSON file"""


# --- what runs: one object per implementation, each able to take one call of `step` -------------------


class SingleRunner:
    """One ``MnistGlimpseEnv`` in a Python loop; ``step`` takes one glimpse (and resets after the last)."""

    def __init__(self, args: Args, device: str, core: PerceptionCore) -> None:
        self.env = MnistGlimpseEnv(args.max_glimpses, "train", args.sampler, perception=core, device=device)
        self.env.reset(seed=args.seed)
        # the single env takes numpy actions (it converts them itself), so the pool is numpy
        self.actions = np.random.default_rng(args.seed).uniform(-1, 1, (args.action_pool, 2)).astype(np.float32)
        self.calls = 0

    def step(self) -> int:
        _, _, terminated, truncated, _ = self.env.step(self.actions[self.calls % len(self.actions)])
        self.calls += 1
        if terminated or truncated:
            self.env.reset()
        return 1


class VectorRunner:
    """A vector env (SyncVectorEnv or MnistGlimpseVectorEnv) and its pre-generated actions.

    ``step`` makes one ``env.step`` call and returns how many glimpses it took. All sub-envs start
    together and every episode lasts ``T`` glimpses, so they stay in lockstep and the calls that only
    reset (``next_step`` mode) are exactly every ``(T + 1)``-th one; counting them needs no device read.
    """

    def __init__(self, env: gymnasium.vector.VectorEnv, actions: object, args: Args) -> None:
        self.env, self.actions = env, actions
        self.num_envs, self.max_glimpses = env.num_envs, args.max_glimpses
        self.next_step = env.metadata["autoreset_mode"] == AutoresetMode.NEXT_STEP
        self.env.reset(seed=args.seed)
        self.calls = 0
        self.since_reset = 0  # glimpses taken in the current episodes (next_step mode)

    def step(self) -> int:
        self.env.step(self.actions[self.calls % len(self.actions)])
        self.calls += 1
        if self.next_step:
            if self.since_reset == self.max_glimpses:
                self.since_reset = 0  # this call was the autoreset: no glimpse taken
                return 0
            self.since_reset += 1
        return self.num_envs


def autoreset_mode(args: Args) -> AutoresetMode:
    """``"next_step"`` -> ``AutoresetMode.NEXT_STEP`` (Gymnasium spells the values ``"NextStep"``)."""
    return AutoresetMode[args.autoreset_mode.upper()]


def make_sync(args: Args, device: str, num_envs: int, core: PerceptionCore) -> VectorRunner:
    """SyncVectorEnv of ``num_envs`` single envs; they share one core (the baseline's best case)."""

    def make_env() -> MnistGlimpseEnv:
        return MnistGlimpseEnv(args.max_glimpses, "train", args.sampler, perception=core, device=device)

    env = SyncVectorEnv([make_env for _ in range(num_envs)], autoreset_mode=autoreset_mode(args))
    rng = np.random.default_rng(args.seed)
    actions = rng.uniform(-1, 1, (args.action_pool, num_envs, 2)).astype(np.float32)
    return VectorRunner(env, actions, args)


def make_batched(args: Args, device: str, num_envs: int, core: PerceptionCore) -> VectorRunner:
    """The batched ``MnistGlimpseVectorEnv``, returning torch tensors on ``device``."""
    env = MnistGlimpseVectorEnv(
        num_envs,
        args.max_glimpses,
        "train",
        args.sampler,
        perception=core,
        device=device,
        autoreset_mode=autoreset_mode(args),
        array_type="torch",
    )
    generator = torch.Generator(device=device).manual_seed(args.seed)
    actions = torch.rand(args.action_pool, num_envs, 2, generator=generator, device=device) * 2 - 1
    return VectorRunner(env, actions, args)


# --- how it is timed ---------------------------------------------------------------------------------


def synchronize(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def run_for(runner: SingleRunner | VectorRunner, seconds: float, device: str, min_calls: int = 1) -> tuple[int, float]:
    """Step ``runner`` until ``seconds`` have passed (and at least ``min_calls`` calls were made).

    The loop reads the clock without synchronizing (cheap; on CUDA it may run ahead of the GPU), then
    synchronizes once at the end and reads the clock again: that final time is the one reported.
    Returns ``(glimpses, elapsed seconds)``.
    """
    synchronize(device)
    start = time.perf_counter()
    glimpses, calls = 0, 0
    while calls < min_calls or time.perf_counter() - start < seconds:
        glimpses += runner.step()
        calls += 1
    synchronize(device)
    return glimpses, time.perf_counter() - start


def measure(runner: SingleRunner | VectorRunner, args: Args, device: str) -> float:
    """Warm up (one episode at least, including its reset), then return glimpse-steps per second."""
    run_for(runner, args.warmup_seconds, device, min_calls=args.max_glimpses + 1)
    glimpses, elapsed = run_for(runner, args.seconds, device)
    return glimpses / elapsed


# --- the machine -------------------------------------------------------------------------------------


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def describe_machine() -> dict[str, object]:
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {
        "cpu": cpu_model(),
        "cpu_count": os.cpu_count(),
        "cpus_usable": usable,
        "torch_threads": torch.get_num_threads(),
        "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
        "torch": torch.__version__,
        "gymnasium": gymnasium.__version__,
        "python": platform.python_version(),
    }


# --- the benchmark -----------------------------------------------------------------------------------


def benchmark(
    device: str, implementation: str, num_envs: int, build: Callable[[], SingleRunner | VectorRunner], args: Args
) -> dict:
    """Build one configuration (untimed), measure it, print a progress line and return the result."""
    started = time.perf_counter()
    runner = build()
    setup = time.perf_counter() - started
    rate = measure(runner, args, device)
    print(
        f"  {device:4s} {implementation:22s} N={num_envs:<6d} {rate:>14,.0f} steps/s   (setup {setup:.1f} s)",
        flush=True,
    )
    return {"device": device, "implementation": implementation, "num_envs": num_envs, "steps_per_s": rate}


def main(args: Args) -> None:
    if args.torch_threads > 0:
        torch.set_num_threads(args.torch_threads)
    machine = describe_machine()
    print(
        f"machine: {machine['cpu']}, {machine['cpu_count']} CPUs ({machine['cpus_usable']} usable), "
        f"torch threads {machine['torch_threads']}, GPU: {machine['gpu'] or 'none'}"
    )
    print(f"torch {machine['torch']}, gymnasium {machine['gymnasium']}, python {machine['python']}")
    print(
        f"T={args.max_glimpses} glimpses, sampler={args.sampler}, autoreset={args.autoreset_mode}, "
        f"{args.seconds:g} s per configuration after {args.warmup_seconds:g} s warm-up\n"
    )
    wanted = dict.fromkeys((*args.baseline_devices, *args.devices))  # ordered, unique
    if "cuda" in wanted and not torch.cuda.is_available():
        print("skipping cuda: torch.cuda.is_available() is False\n")
        del wanted["cuda"]
    # one core per device, shared by all envs
    cores = {
        device: (PerceptionCore.load(args.perception, device).eval() if args.perception else load_pretrained(device))
        for device in wanted
    }
    if cores:  # none when no device asked for is available
        print(f"perception core: {args.perception or 'the packaged one'}, {next(iter(cores.values())).config}\n")

    results: list[dict] = []
    for device in (d for d in args.baseline_devices if d in cores):
        core = cores[device]
        results.append(benchmark(device, "single", 1, partial(SingleRunner, args, device, core), args))
        for n in args.sync_num_envs:
            results.append(benchmark(device, "SyncVectorEnv", n, partial(make_sync, args, device, n, core), args))
    for device in (d for d in args.devices if d in cores):
        core = cores[device]
        for n in args.num_envs:
            results.append(
                benchmark(device, "MnistGlimpseVectorEnv", n, partial(make_batched, args, device, n, core), args)
            )
            if device == "cuda":
                torch.cuda.empty_cache()

    # ratio batched / sync at the same N: the sync run on the same device if there is one, else on CPU
    sync = {(r["device"], r["num_envs"]): r["steps_per_s"] for r in results if r["implementation"] == "SyncVectorEnv"}
    for result in results:
        if result["implementation"] != "MnistGlimpseVectorEnv":
            continue
        n = result["num_envs"]
        reference = next(((d, n) for d in (result["device"], "cpu") if (d, n) in sync), None)
        if reference is not None:
            result["vs_sync"] = {
                "device": reference[0],
                "num_envs": n,
                "ratio": result["steps_per_s"] / sync[reference],
            }

    print("\n| device | implementation | N | steps/s | batched / sync |")
    print("| --- | --- | ---: | ---: | --- |")
    for result in results:
        versus = result.get("vs_sync")
        ratio = (
            f"{versus['ratio']:,.1f}x (vs SyncVectorEnv {versus['device']}, N={versus['num_envs']})" if versus else ""
        )
        print(
            f"| {result['device']} | {result['implementation']} | {result['num_envs']} | "
            f"{result['steps_per_s']:,.0f} | {ratio} |"
        )

    if args.json:
        path = Path(args.json)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"machine": machine, "args": asdict(args), "results": results}, indent=2) + "\n")
        print(f"\nwrote {path}")


if __name__ == "__main__":
    run_main(main, tyro.cli(Args, description=plain_text(__doc__)))
