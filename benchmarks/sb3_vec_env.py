"""Steps per second of the SB3 adapter against SB3's ``DummyVecEnv`` of single envs, at equal ``N``.

* ``DummyVecEnv``: SB3's :class:`~stable_baselines3.common.vec_env.DummyVecEnv` of ``N``
  :class:`envs.MnistGlimpseEnv` (one Python env per sub-environment, all sharing one perception
  core: the baseline's best case);
* ``MnistGlimpseSB3VecEnv``: :class:`envs.sb3.MnistGlimpseSB3VecEnv`, one batched env.

Both are driven the way SB3 drives them (``VecEnv.step`` with a numpy ``(N, 2)`` float32 action
array, numpy back, infos as a list of ``N`` dicts, autoreset inside the step), with uniformly random
actions pre-generated in a pool that is cycled (drawing them is not measured). Each configuration is
warmed up (at least one full episode), then stepped for ``--seconds`` of wall-clock time; the rate is
sub-environment steps (glimpses) divided by the time elapsed.

    python benchmarks/sb3_vec_env.py                           # N=256, T=25, on CPU
    python benchmarks/sb3_vec_env.py --num-envs 64 256 1024 --torch-threads 1 --json runs/sb3_vec_env.json

Recorded runs: ``experiments/results/speed/sb3_vec_env_cpu.json`` and
``experiments/results/studies/sb3_vec_env_cuda_h200.json``.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import tyro
from stable_baselines3.common.vec_env import DummyVecEnv, VecEnv

from agents.cli import plain_text, run_main
from envs.glimpse_env import MnistGlimpseEnv
from envs.perception import load_pretrained
from envs.sb3 import MnistGlimpseSB3VecEnv


@dataclass
class Args:
    num_envs: tuple[int, ...] = (256,)
    """numbers of sub-environments N (both implementations run at each)"""
    seconds: float = 3.0
    """wall-clock budget of the timed part of each configuration, in seconds"""
    warmup_seconds: float = 0.5
    """untimed stepping before each timed part (at least one full episode is always run)"""
    max_glimpses: int = 25
    """episode length T"""
    sampler: str = "bilinear"
    """glimpse sampler: nearest, bilinear, bicubic or gaussian"""
    device: str = "cpu"
    """device of the environments' torch computation"""
    action_pool: int = 64
    """how many steps of random actions to pre-generate and cycle through"""
    torch_threads: int = 0
    """torch intra-op threads (0: torch's default; 1 is steadier on a small shared machine)"""
    seed: int = 0
    """seed of the envs and of the action pool"""
    json: str | None = None
    """if given, also write the results to this JSON file"""


def make_dummy(args: Args, num_envs: int, core) -> VecEnv:
    def make_env() -> MnistGlimpseEnv:
        return MnistGlimpseEnv(args.max_glimpses, "train", args.sampler, perception=core, device=args.device)

    return DummyVecEnv([make_env for _ in range(num_envs)])


def make_adapter(args: Args, num_envs: int, core) -> VecEnv:
    return MnistGlimpseSB3VecEnv(
        num_envs, max_glimpses=args.max_glimpses, sampler=args.sampler, perception=core, device=args.device
    )


def steps_per_second(env: VecEnv, args: Args) -> float:
    """Warm up, then step ``env`` for ``args.seconds``; returns sub-environment steps per second."""
    actions = np.random.default_rng(args.seed).uniform(-1, 1, (args.action_pool, env.num_envs, 2)).astype(np.float32)
    env.seed(args.seed)
    env.reset()
    calls = 0
    start = time.perf_counter()
    while calls < args.max_glimpses + 1 or time.perf_counter() - start < args.warmup_seconds:
        env.step(actions[calls % len(actions)])
        calls += 1
    calls = 0
    start = time.perf_counter()
    while time.perf_counter() - start < args.seconds:
        env.step(actions[calls % len(actions)])
        calls += 1
    return calls * env.num_envs / (time.perf_counter() - start)


def main(args: Args) -> list[dict]:
    if args.torch_threads > 0:
        torch.set_num_threads(args.torch_threads)
    print(
        f"T={args.max_glimpses} glimpses, sampler={args.sampler}, device={args.device}, torch threads "
        f"{torch.get_num_threads()}, {args.seconds:g} s per configuration after {args.warmup_seconds:g} s warm-up\n"
    )
    core = load_pretrained(args.device, shared=True)  # one core shared by every env
    results = []
    for n in args.num_envs:
        rates = {}
        for name, make in (("DummyVecEnv", make_dummy), ("MnistGlimpseSB3VecEnv", make_adapter)):
            env = make(args, n, core)
            rates[name] = steps_per_second(env, args)
            env.close()
            print(f"  N={n:<6d} {name:22s} {rates[name]:>12,.0f} steps/s", flush=True)
        results.append({"num_envs": n, **rates, "ratio": rates["MnistGlimpseSB3VecEnv"] / rates["DummyVecEnv"]})

    print("\n| N | DummyVecEnv steps/s | MnistGlimpseSB3VecEnv steps/s | adapter / DummyVecEnv |")
    print("| ---: | ---: | ---: | ---: |")
    for result in results:
        print(
            f"| {result['num_envs']} | {result['DummyVecEnv']:,.0f} | {result['MnistGlimpseSB3VecEnv']:,.0f} | "
            f"{result['ratio']:,.1f}x |"
        )
    if args.json:
        path = Path(args.json)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(
            json.dumps({"args": asdict(args), "torch_threads": torch.get_num_threads(), "results": results}, indent=2)
            + "\n"
        )
        print(f"\nwrote {path}")
    return results


if __name__ == "__main__":
    run_main(main, tyro.cli(Args, description=plain_text(__doc__)))
