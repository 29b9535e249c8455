"""Speed of this tree against another commit's, in one run on one machine.

The two trees take turns, round after round (the commit's, this one, the commit's, ...), each
running the same benchmarks in a fresh process, so both see the same machine and, on average, the
same load:

* ``benchmarks/env_throughput.py`` (its ``--json``): environment steps per second of every
  implementation and size it measures;
* ``benchmarks/train_step_speed.py`` (its printed table): optimizer steps per second of the
  differentiable agents' variants.

The commit's tree is ``git archive REF`` unpacked into a temporary folder and run with that folder
first on ``PYTHONPATH``, so it runs its own ``envs``, ``agents`` and benchmarks. The result, per
figure: every round's value for each tree and the median of ``this / commit`` over the rounds
(above 1: this tree is faster).

    python benchmarks/before_after.py --ref a1ae3ff --json experiments/results/speed/before_after.json
    python benchmarks/before_after.py --ref HEAD~3 --rounds 5 --train-steps 0    # the environment only
"""

from __future__ import annotations

import json
import os
import platform
import re
import shlex
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import tyro

from agents.cli import UserValueError, plain_text, run_main

REPO = Path(__file__).resolve().parents[1]
#: A row of train_step_speed.py's table: ``| variant | steps/s | ratio |``.
TABLE_ROW = re.compile(r"^\| (?P<name>[^|]+?) \| (?P<rate>[0-9.]+) \| [0-9.]+x \|$", re.MULTILINE)


@dataclass
class Args:
    ref: str
    """the commit to measure this tree against (any git revision)"""
    rounds: int = 3
    """turns of each tree"""
    env_flags: str = "--num-envs 64 1024 16384 --sync-num-envs 64 --devices cpu --seconds 2 --torch-threads 1"
    """flags of benchmarks/env_throughput.py (its --json is added)"""
    train_steps: int = 4
    """--steps of benchmarks/train_step_speed.py (0: not run)"""
    torch_threads: int = 1
    """--torch-threads of benchmarks/train_step_speed.py"""
    json: str | None = None
    """if given, also write the machine, the commands and the results to this JSON file"""


def export_tree(ref: str, folder: Path) -> str:
    """Unpack ``git archive ref`` into ``folder``; return the commit's full hash.

    :raises UserValueError: ``ref`` names no commit of this repository.
    """
    found = subprocess.run(
        ["git", "rev-parse", "--verify", f"{ref}^{{commit}}"], cwd=REPO, capture_output=True, text=True
    )
    if found.returncode != 0:
        raise UserValueError(f"--ref {ref} names no commit of {REPO}; pass a commit hash, tag or branch.")
    commit = found.stdout.strip()
    archive = folder / "tree.tar"
    subprocess.run(["git", "archive", "--format=tar", "-o", str(archive), commit], cwd=REPO, check=True)
    with tarfile.open(archive) as tar:
        tar.extractall(folder / "tree", filter="data")
    archive.unlink()
    return commit


def run_benchmarks(tree: Path, args: Args, scratch: Path) -> dict[str, float]:
    """Run the benchmarks of ``tree`` once, in fresh processes; every figure by name (steps per second)."""
    env = {**os.environ, "PYTHONPATH": str(tree), "TQDM_DISABLE": "1"}
    figures: dict[str, float] = {}
    out = scratch / "env.json"
    command = [sys.executable, "benchmarks/env_throughput.py", *shlex.split(args.env_flags), "--json", str(out)]
    subprocess.run(command, cwd=tree, env=env, check=True, capture_output=True)
    for row in json.loads(out.read_text())["results"]:
        figures[f"env {row['implementation']} {row['device']} N={row['num_envs']}"] = row["steps_per_s"]
    if args.train_steps:
        command = [sys.executable, "benchmarks/train_step_speed.py", "--steps", str(args.train_steps)]
        command += ["--torch-threads", str(args.torch_threads), "--device", "cpu"]
        printed = subprocess.run(command, cwd=tree, env=env, check=True, capture_output=True, text=True).stdout
        for match in TABLE_ROW.finditer(printed):
            figures[f"train step {match['name']}"] = float(match["rate"])
    return figures


def main(args: Args) -> dict[str, Any]:
    if args.rounds < 1:
        raise UserValueError(f"--rounds must be >= 1, got {args.rounds}.")
    rounds: dict[str, list[dict[str, float]]] = {"commit": [], "this": []}
    with tempfile.TemporaryDirectory() as folder:
        scratch = Path(folder)
        commit = export_tree(args.ref, scratch)
        trees = {"commit": scratch / "tree", "this": REPO}
        for k in range(args.rounds):
            for name, tree in trees.items():
                start = time.time()
                rounds[name].append(run_benchmarks(tree, args, scratch))
                print(f"round {k + 1}/{args.rounds}, {name}: {time.time() - start:.0f} s", flush=True)
    names = [name for name in rounds["this"][0] if all(name in r for r in rounds["commit"] + rounds["this"])]
    ratios = {
        name: statistics.median(this[name] / before[name] for this, before in zip(rounds["this"], rounds["commit"]))
        for name in names
    }
    print(f"\nsteps per second, median over {args.rounds} rounds; ratio: this tree / {commit[:10]} (above 1: faster)")
    print("| figure | commit | this | ratio |\n|---|--:|--:|--:|")
    for name in names:
        before = statistics.median(r[name] for r in rounds["commit"])
        this = statistics.median(r[name] for r in rounds["this"])
        print(f"| {name} | {before:,.2f} | {this:,.2f} | {ratios[name]:.3f} |")
    result = {
        "what": "steps per second of the same benchmarks in two trees, taking turns in one run; ratio: median of this / commit over the rounds",
        "commit": commit,
        "this": subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True).stdout.strip(),
        "command": shlex.join(["python", "benchmarks/before_after.py", *sys.argv[1:]]),
        "machine": {
            "cpu": platform.processor() or platform.machine(),
            "cpu_count": os.cpu_count(),
            "torch": torch.__version__,
            "load_average_at_end": os.getloadavg(),
        },
        "rounds": rounds,
        "ratio": ratios,
    }
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1) + "\n")
        print(f"wrote {args.json}")
    return result


if __name__ == "__main__":
    run_main(main, tyro.cli(Args, description=plain_text(__doc__)))
