"""Which way of learning where to look works best, and at what cost? Train every method for a few
seeds, evaluate each on the 10,000 test images (nearest read-out), and tabulate and plot the results.

    python train/compare.py                                   # 12 methods x seeds 0 1 2, CPU budgets
    python train/compare.py --full --device cuda              # GPU budgets
    python train/compare.py --methods ppo-joint reinforce-joint --seeds 0
    python train/compare.py --methods random-glimpses fixed-sequence --seeds 0 --out /tmp/cmp --tiny

Each run is its own subprocess (``python train/<script>.py ...``; a crash is reported, not fatal),
``--jobs`` at a time with ``--torch-threads`` threads each, writing to ``OUT/<method>/seed<k>/``. A
folder that already holds ``checkpoint.pt`` and ``metrics.json`` is loaded, not retrained
(``--retrain`` forces). Every checkpoint is then scored by ``train/evaluate.py`` (seeded with the
run's seed, which only the random-glimpses policy uses). Only budgets, targets, policy kind and seeds
are set here; everything else is each script's default.

Writes, in ``--results`` (default: ``results/`` for the default ``--out results/runs``):
``summary.csv`` (one row per method x seed), ``summary.md`` (one row per method, mean ± std over
seeds, plus GDFS's published numbers), ``accuracy_vs_glimpses.png`` and ``where_they_look.png``.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch
import tyro

from agents.checkpoint import load_agent
from agents.compare import (
    JobResult,
    Method,
    aggregate,
    gdfs_row,
    glimpse_density,
    make_job,
    markdown_table,
    plot_accuracy_curves,
    plot_where_they_look,
    run_jobs,
    summary_row,
    write_csv,
    write_markdown,
)
from envs.config import resolve_device
from envs.data import NUM_CLASSES, load_mnist

MethodName = Literal[
    "random-glimpses", "fixed-sequence", "differentiable-argmin", "differentiable-second", "differentiable-label",
    "differentiable-pixel", "differentiable-pixel-memory", "differentiable-pixel-memory-greedy", "reinforce-frozen",
    "reinforce-joint", "ppo-frozen", "ppo-joint", "ppo-joint-from-fixed",
]

#: The methods: which trainer (train/ script) and the flags that make it this method.
METHODS: dict[str, Method] = {
    "random-glimpses": Method("pretrain"),  # a core trained on uniformly random glimpses, evaluated with them
    "fixed-sequence": Method("differentiable", ("--policy", "fixed")),
    "differentiable-argmin": Method("differentiable", ("--attention-target", "argmin")),
    "differentiable-second": Method("differentiable", ("--attention-target", "second")),
    "differentiable-label": Method("differentiable", ("--attention-target", "label")),
    # the same agent choosing among the 784 pixel centres (agents.pixel_attention), its measured settings
    "differentiable-pixel": Method(
        "differentiable", ("--policy", "pixel", "--attention-lr", "1e-2", "--pixel-noise-final", "0.1")
    ),
    # ... that also sees the masked image of the pixels it read (runs outside the env; see README)
    "differentiable-pixel-memory": Method(
        "differentiable",
        ("--policy", "pixel", "--pixel-memory", "pixels", "--attention-lr", "1e-2", "--pixel-noise-final", "0.1"),
    ),
    # ... whose choices each learn from the prediction right after them only, as GDFS trains its selector
    "differentiable-pixel-memory-greedy": Method(
        "differentiable",
        ("--policy", "pixel", "--pixel-memory", "pixels", "--attention-lr", "1e-2", "--pixel-noise-final", "0.1",
         "--attention-credit", "greedy"),
    ),
    "reinforce-frozen": Method("reinforce", ("--perception", "frozen")),
    "reinforce-joint": Method("reinforce", ("--perception", "joint")),
    "ppo-frozen": Method("ppo", ("--perception", "frozen")),
    "ppo-joint": Method("ppo", ("--perception", "joint")),
    # PPO warm-started from the fixed-sequence run of the same seed: its locations and its core
    "ppo-joint-from-fixed": Method("ppo", ("--perception", "joint"), warm_start="fixed-sequence"),
}

#: Training budgets per preset and trainer (plus --glimpses, --seed, --device, --out, --torch-threads).
#: "default": the 27 runs (9 methods x 3 seeds) in about 45 minutes on 2 uncontended CPU cores with
#: --jobs 2 --torch-threads 1. Measured per job in pairs (one thread each): pretrain ~31 steps/s;
#: differentiable ~11 s/epoch (fixed) and ~18 s/epoch (attention); REINFORCE ~100k (frozen) / ~72k
#: (joint) env steps/s; PPO ~39k / ~37k; plus ~10-12 s per job of start-up and test evaluations.
#: "full": a GPU. "tiny": a smoke test of the whole pipeline (a few minutes).
#: ppo-joint-from-fixed adds one more PPO run per seed (~2.5 min each in pairs).
#: Warm starts are not in the train times: ppo-joint-from-fixed starts from the fixed-sequence run
#: of its seed (add that run's time to its own); the differentiable agents start from
#: envs/pretrained/perception_random_glimpses.pt (3000 pretrain steps, the recipe "random-glimpses"
#: runs here); REINFORCE and PPO use the env's packaged core, envs/pretrained/perception.pt.
BUDGETS: dict[str, dict[str, tuple[str, ...]]] = {
    "default": {
        "pretrain": ("--steps", "3000"),
        "differentiable": ("--epochs", "5"),
        "reinforce": ("--total-steps", "5000000"),
        "ppo": ("--total-steps", "5000000"),
    },
    "full": {
        "pretrain": ("--steps", "10000"),
        "differentiable": ("--epochs", "30"),
        "reinforce": ("--total-steps", "50000000"),
        "ppo": ("--total-steps", "20000000"),
    },
    "tiny": {
        "pretrain": ("--steps", "20"),
        "differentiable": ("--epochs", "1", "--batch-size", "4096"),
        "reinforce": ("--total-steps", "50000"),
        "ppo": ("--total-steps", "20000"),
    },
}


@dataclass
class Args:
    methods: tuple[MethodName, ...] = tuple(METHODS)  # type: ignore[assignment]
    """methods to run, in table order"""
    seeds: tuple[int, ...] = (0, 1, 2)
    """seeds of every method"""
    out: str = "results/runs"
    """runs go to OUT/<method>/seed<k>/"""
    results: str | None = None
    """folder of summary.csv/.md and the figures (default: OUT's parent if OUT is named runs, else OUT)"""
    full: bool = False
    """GPU budgets (the 'full' row of BUDGETS)"""
    tiny: bool = False
    """smoke-test budgets (the 'tiny' row of BUDGETS)"""
    glimpses: int = 25
    """glimpses per episode (T) for every method"""
    retrain: bool = False
    """retrain (and re-evaluate) even where OUT/<method>/seed<k>/ already holds a finished run"""
    jobs: int = 2
    """runs in parallel (subprocesses)"""
    torch_threads: int = 1
    """torch threads of each subprocess (--torch-threads and OMP_NUM_THREADS)"""
    device: str = "auto"
    """cpu, cuda or auto, for training and evaluation"""


def main(args: Args) -> list[dict]:
    if args.full and args.tiny:
        raise SystemExit("--full and --tiny exclude each other")
    preset = "full" if args.full else "tiny" if args.tiny else "default"
    out = Path(args.out)
    results = Path(args.results) if args.results else (out.parent if out.name == "runs" else out)
    results.mkdir(parents=True, exist_ok=True)
    methods = list(dict.fromkeys(args.methods))
    if not methods or not args.seeds:
        raise SystemExit("nothing to do: give at least one --methods and one --seeds")
    for method in list(methods):  # a warm start needs the run it starts from
        prerequisite = METHODS[method].warm_start
        if prerequisite and prerequisite not in methods:
            print(f"compare: adding {prerequisite}, the warm start of {method}")
            methods.insert(methods.index(method), prerequisite)

    # 1. One job per (seed, method), seed-major so a complete seed-0 comparison exists early.
    def budget(method: str) -> list[str]:
        return [*BUDGETS[preset][METHODS[method].trainer], "--glimpses", str(args.glimpses)]

    jobs = [
        make_job(method, METHODS[method], seed, out, budget(method), args.device, args.torch_threads)
        for seed in args.seeds
        for method in methods
    ]
    print(f"compare: {len(methods)} methods x {len(args.seeds)} seeds, preset {preset!r}, {args.jobs} at a time, "
          f"{args.torch_threads} thread(s) each; runs in {out}/, summary in {results}/")
    for trainer, flags in BUDGETS[preset].items():
        print(f"  {trainer:>15}: {' '.join(flags)}")
    started = time.time()

    def report(done: int, total: int, result: JobResult) -> None:
        stamp = time.strftime("%H:%M:%S")
        head = f"[{done:>2}/{total} {stamp} +{(time.time() - started) / 60:5.1f} min] {result.method} seed {result.seed}"
        if result.status == "failed":
            print(f"{head}: FAILED ({result.wall_seconds:.0f} s) {result.error}", flush=True)
            return
        accuracy = " / ".join(f"{100 * v:.1f}" for v in result.evaluation["test_accuracy"].values())
        print(f"{head}: {result.status} ({result.wall_seconds:.0f} s wall, train {result.metrics.get('train_seconds')} s); "
              f"test accuracy at {'/'.join(result.evaluation['test_accuracy'])} glimpses: {accuracy} %", flush=True)

    # 2. Train what is missing and evaluate everything with train/evaluate.py.
    outcomes = run_jobs(jobs, args.jobs, retrain=args.retrain, glimpses=args.glimpses, report=report)

    # 3. Tables.
    rows = [summary_row(result) for result in outcomes]
    write_csv(rows, results / "summary.csv")
    preamble = (
        f"Test accuracy (%) on the 10,000 MNIST test images, nearest read-out (one real pixel per glimpse), "
        f"mean ± std over seeds {', '.join(map(str, args.seeds))}; preset `{preset}`; train time is each "
        f"script's own training clock (without its evaluations). Budgets: "
        + "; ".join(f"{trainer} `{' '.join(flags)}`" for trainer, flags in BUDGETS[preset].items())
        + f"; {args.glimpses} glimpses."
        + "".join(f" {m}'s train time excludes the {METHODS[m].warm_start} run it starts from." for m in methods
                  if METHODS[m].warm_start)
        + " Written by `train/compare.py`."
    )
    write_markdown(aggregate(rows, methods), results / "summary.md", preamble)

    # 4. Figures: accuracy curves over all seeds; glimpse locations of the first seed's runs.
    plot_accuracy_curves(outcomes, methods, results / "accuracy_vs_glimpses.png")
    torch.set_num_threads(max(1, args.torch_threads * args.jobs))
    device = resolve_device(args.device)
    test = load_mnist("test", device)
    class_means = torch.stack([test.images[test.labels == c].float().mean(dim=0) / 255.0 for c in range(NUM_CLASSES)]).cpu()
    densities = {}
    for result in outcomes:
        if result.seed != args.seeds[0] or result.status == "failed":
            continue
        try:
            policy, core, checkpoint = load_agent(result.folder / "checkpoint.pt", device)
            torch.manual_seed(result.seed)  # the random-glimpses policy draws from torch's global generator
            densities[result.method] = glimpse_density(policy, core, test.images, test.labels, checkpoint["glimpses"])
        except Exception as error:  # noqa: BLE001 - a figure row is not worth losing the summary
            print(f"where_they_look: skipped {result.method}: {type(error).__name__}: {error}")
    if densities:
        plot_where_they_look(densities, class_means, results / "where_they_look.png",
                             title=f"where they look (seed {args.seeds[0]}): share of each digit's glimpses per pixel "
                                   f"(sqrt colour scale per row; cyan: mean digit)")

    failed = [f"{r.method} seed {r.seed}" for r in outcomes if r.status == "failed"]
    print(f"\ndone in {(time.time() - started) / 60:.1f} min; wrote {results}/summary.csv, summary.md, "
          f"accuracy_vs_glimpses.png, where_they_look.png" + (f"; FAILED: {', '.join(failed)}" if failed else ""))
    print(markdown_table([*aggregate(rows, methods), gdfs_row()]))
    return rows


if __name__ == "__main__":
    summary = main(tyro.cli(Args))
    sys.exit(1 if any(row["status"] == "failed" for row in summary) else 0)
