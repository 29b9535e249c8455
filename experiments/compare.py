"""Which way of learning where to look works best, and at what cost? Train every method for a few
seeds as Ray tasks, then tabulate and plot what the runs measured.

    python experiments/compare.py                                        # every method x seeds 0 1 2
    python experiments/compare.py --methods fixed-sequence differentiable-label --seeds 0
    python experiments/compare.py --address auto                         # on a running Ray cluster
    python experiments/compare.py --methods random-glimpses --seeds 0 --tiny --out /tmp/cmp --doc /tmp/cmp/results.md

Each run is one Ray task that runs its training script (``python train/<script>.py FLAGS --seed K
--out RUN``) in a subprocess, so a crash is that run's alone; ``ray.init()`` starts a local Ray with
``--jobs`` x ``--torch-threads`` CPUs unless ``--address`` names a cluster (whose nodes need this
repository at the same path, installed). A method that starts from another method's run
(``Method.warm_start``) waits for that run's task.

A run lives in ``OUT/<method>/seed<k>/``; its ``metrics.json`` (the training script's, plus the
``command`` that made it) is what every table and figure is made from. A folder that holds
``metrics.json`` is a finished run and is skipped (``--retrain`` trains it again), so an interrupted
comparison resumes where it stopped. Then, from every finished run under ``OUT`` (not only this
call's), it writes ``--doc`` (default ``docs/results.md``: the headline table, the short-budget
table, the command of every row), the headline table of README.md (between its
``results-table`` markers, default output only) and ``accuracy_vs_glimpses.png``;
``--where-they-look`` also draws where each method looks (from the checkpoints of the first seed).

Ray is an optional extra: ``pip install -e '.[experiments]'``.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from agents.cli import UserValueError, plain_text, run_main
from envs.atomic import write_atomic

# No torch, matplotlib or agents at import time (only the standard library, and envs.atomic with
# Gymnasium's registry): the Ray workers import this module to run run_training, and the rest is
# needed only for the figures.
if TYPE_CHECKING:
    import torch

    from agents.rollout import GlimpsePolicy
    from envs.perception import PerceptionCore

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "experiments" / "results"
RUNS = RESULTS / "runs"
RESULTS_DOC = REPO / "docs" / "results.md"
README = REPO / "README.md"
README_MARKERS = ("<!-- results-table:start -->", "<!-- results-table:end -->")

#: Glimpse budgets of the tables.
BUDGETS = (1, 2, 5, 10, 25)

#: GDFS (Covert et al., ICML 2023), MNIST, accuracy in percent read off the paper: published, not run here.
#: ``(low, high)`` where the paper's curve only gives a range; 1 and 2 pixels are not reported.
GDFS_PUBLISHED: dict[int, tuple[float, float]] = {5: (69.0, 69.0), 10: (87.0, 87.0), 25: (95.5, 96.0)}
GDFS_LABEL = "GDFS (Covert et al., ICML 2023): published, not run here"

#: Training scripts, by name: path from the repository root, whether ``--out`` names a file in the run
#: folder (the pretraining script writes a core there and metrics.json beside it), flags always passed.
TRAINERS: dict[str, tuple[str, str | None, tuple[str, ...]]] = {
    "pretrain": ("train/pretrain_perception.py", "perception.pt", ()),
    "differentiable": ("train/differentiable.py", None, ()),
    "reinforce": ("train/reinforce.py", None, ()),
    "ppo": ("train/ppo.py", None, ("--no-progress-bar",)),
    "gdfs": ("train/gdfs.py", None, ()),
}

#: Smoke-test (``--tiny``) and GPU (``--gpu``) budgets: flags appended after a method's own, per trainer.
SCALES: dict[str, dict[str, tuple[str, ...]]] = {
    "tiny": {
        "pretrain": ("--steps", "20"),
        "differentiable": ("--epochs", "1", "--batch-size", "4096"),
        "reinforce": ("--total-steps", "50000"),
        "ppo": ("--total-steps", "20000"),
        "gdfs": ("--max-epochs", "1", "--train-images", "1024", "--val-images", "256", "--max-glimpses", "10")
        + ("--eval-images", "500", "--curve-images", "100"),
    },
    "gpu": {
        "pretrain": ("--steps", "10000"),
        "differentiable": ("--epochs", "30"),
        "reinforce": ("--total-steps", "50000000"),
        "ppo": ("--total-steps", "20000000"),
        "gdfs": (),  # GDFS's own schedule, to its early stops
    },
}


@dataclass(frozen=True)
class Method:
    """A way of learning where to look: a training script, the flags that make it this method, and
    the method whose run of the same seed it starts from (``--init-from`` its checkpoint)."""

    trainer: str
    flags: tuple[str, ...] = ()
    warm_start: str | None = None
    headline: bool = False
    """a row of the headline table: the best configuration of its family"""

    pixel_rl: bool = False
    """a row of the pixel-action RL table: an RL agent from scratch with pixel actions on the record observation, its
    own budget (the others of the short table share 5 epochs or 5M environment steps)"""

    tiny: tuple[str, ...] = ()
    """flags added to the trainer's smoke-test budget (SCALES["tiny"])"""

    gdfs: bool = False
    """a row of the GDFS table: GDFS run here (train/gdfs.py), beside differentiable-best"""

    gpu_only: bool = False
    """runs only at the GPU budgets (--gpu) or as a smoke test (--tiny), never in a default CPU comparison"""

    def command(self, seed: int | str, folder: Path | str) -> list[str]:
        """The training command of this method's run with ``seed`` in ``folder`` (``python`` first)."""
        script, out_file, extra = TRAINERS[self.trainer]
        command = ["python", script, *self.flags, *extra]
        if self.warm_start:
            command += [
                "--init-from",
                str(Path(folder).parent.parent / self.warm_start / f"seed{seed}" / "checkpoint.pt"),
            ]
        return [*command, "--seed", str(seed), "--out", str(Path(folder) / out_file if out_file else folder)]


_MEMORY = ("--preset", "pixel-memory")
_PIXEL = ("--action-type", "pixel")
#: The shipped agent (--preset best, seed 0), the warm start of MaskablePPO's headline row.
_SHIPPED = ("--init-from", "envs/pretrained/agent.pt")
#: The core the RL rows below run on: the shipped agent's 16x32 core, not the environment's general
#: packaged core (their reruns on it drop this flag).
_AGENT_CORE = ("--perception", "envs/pretrained/perception_shipped_agent.pt")
#: The continuous RL rows' per-glimpse offsets start as a random fixed sequence drawn from the seed, as
#: when these rows were run (the scripts' own default is the spread sequence, agents.baselines.spread_sequence).
_REINFORCE_START = ("--step-bias-init", "uniform")
_PPO_START = ("--step-offsets-init", "uniform")


def mean_train_seconds(method: str, runs: Path = RUNS) -> int:
    """The mean ``train_seconds`` of ``method``'s committed runs (``runs/<method>/seed*/metrics.json``),
    in whole seconds: the wall-clock budget that gives another method equal compute."""
    seconds = [
        json.loads(path.read_text())["train_seconds"] for path in sorted((runs / method).glob("seed*/metrics.json"))
    ]
    if not seconds:
        raise FileNotFoundError(
            f"no finished run of {method} in {runs / method}: the equal-compute budget is its mean train time; "
            f"run python experiments/compare.py --methods {method} first."
        )
    return round(sum(seconds) / len(seconds))


#: The wall-clock budget of the GDFS row at equal compute: the mean training time of differentiable-best.
EQUAL_BUDGET_SECONDS = mean_train_seconds("differentiable-best")
#: Every method, in table order. The headline rows are the best configuration of each family; the
#: pixel_rl rows are RL from scratch on the record observation with pixel actions; the others run the
#: short budget (5 epochs, 5M environment steps) that compares all methods at once.
METHODS: dict[str, Method] = {
    "random-glimpses": Method("pretrain", ("--steps", "3000"), headline=True),
    "fixed-sequence-15ep": Method("differentiable", ("--preset", "fixed-sequence"), headline=True),
    "differentiable-15ep": Method("differentiable", ("--preset", "continuous"), headline=True),
    "differentiable-best": Method(
        "differentiable", ("--preset", "best"), headline=True, tiny=("--pretrain-steps", "20")
    ),
    "reinforce-joint-15M": Method(
        "reinforce", ("--learn-perception", "--total-steps", "15000000", *_AGENT_CORE, *_REINFORCE_START), headline=True
    ),
    "ppo-joint-from-fixed-15M": Method(
        "ppo",
        ("--learn-perception", "--total-steps", "15000000", *_PPO_START),
        warm_start="fixed-sequence",
        headline=True,
    ),
    "ppo-pixel-from-shipped-1M": Method(
        "ppo", (*_PIXEL, *_SHIPPED, "--total-steps", "1000000", "--learning-rate", "1e-4"), headline=True
    ),
    "fixed-sequence": Method("differentiable", ("--preset", "fixed-sequence", "--epochs", "5")),
    "differentiable-argmin": Method("differentiable", ("--preset", "argmin", "--epochs", "5")),
    "differentiable-second": Method("differentiable", ("--preset", "second", "--epochs", "5")),
    "differentiable-label": Method("differentiable", ("--preset", "continuous", "--epochs", "5")),
    "differentiable-pixel": Method("differentiable", ("--preset", "pixel")),
    "differentiable-pixel-memory": Method("differentiable", _MEMORY),
    "differentiable-pixel-memory-greedy": Method("differentiable", (*_MEMORY, "--attention-credit", "greedy")),
    "reinforce-frozen": Method(
        "reinforce", ("--no-learn-perception", "--total-steps", "5000000", *_AGENT_CORE, *_REINFORCE_START)
    ),
    "reinforce-joint": Method(
        "reinforce", ("--learn-perception", "--total-steps", "5000000", *_AGENT_CORE, *_REINFORCE_START)
    ),
    "ppo-frozen": Method("ppo", ("--no-learn-perception", "--total-steps", "5000000", *_AGENT_CORE, *_PPO_START)),
    "ppo-joint": Method("ppo", ("--learn-perception", "--total-steps", "5000000", *_AGENT_CORE, *_PPO_START)),
    "ppo-joint-from-fixed": Method(
        "ppo", ("--learn-perception", "--total-steps", "5000000", *_PPO_START), warm_start="fixed-sequence"
    ),
    "ppo-pixel-2M": Method("ppo", (*_PIXEL, "--total-steps", "2000000", *_AGENT_CORE), pixel_rl=True),
    "reinforce-pixel-2M": Method("reinforce", (*_PIXEL, "--total-steps", "2000000", *_AGENT_CORE), pixel_rl=True),
    "gdfs-at-our-budget": Method("gdfs", ("--budget-seconds", str(EQUAL_BUDGET_SECONDS)), gdfs=True),
    "gdfs-full": Method("gdfs", (), gdfs=True, gpu_only=True),
}


@dataclass
class Args:
    methods: tuple[str, ...] = tuple(name for name, method in METHODS.items() if not method.gpu_only)
    """methods to run (names of METHODS), in table order; a GPU-only method only with --gpu or --tiny"""
    seeds: tuple[int, ...] = (0, 1, 2)
    """seeds of every method"""
    out: str = str(RUNS.relative_to(REPO))
    """runs go to OUT/<method>/seed<k>/"""
    doc: str = str(RESULTS_DOC.relative_to(REPO))
    """the results document written from every finished run under OUT"""
    retrain: bool = False
    """train again even where OUT/<method>/seed<k>/metrics.json exists"""
    tiny: bool = False
    """smoke-test budgets (SCALES["tiny"]); needs an --out outside the results folder"""
    gpu: bool = False
    """GPU budgets (SCALES["gpu"])"""
    jobs: int = 2
    """runs at a time on a local Ray (its CPUs: jobs x torch-threads)"""
    torch_threads: int = 1
    """torch threads of each run (--torch-threads, OMP_NUM_THREADS; the CPUs its Ray task reserves)"""
    device: str = "auto"
    """cpu, cuda or auto, for every run"""
    address: str | None = None
    """a Ray cluster to run on ("auto": the one this machine belongs to); default: a local Ray"""
    no_train: bool = False
    """train nothing: only write the tables and the figure from the finished runs under OUT"""
    where_they_look: bool = False
    """also draw where each method looks (needs the checkpoints of the first seed's runs)"""


# --- running -------------------------------------------------------------------------------------


def run_training(command: Sequence[str], env: dict[str, str], folder: str, after: Any = None) -> dict[str, Any]:
    """Run one training ``command`` from the repository root, its output to ``folder/train.log``; on
    success add the command to ``folder/metrics.json``. Never raises: a failure comes back as
    ``{"status": "failed", "error": ...}``. ``after``: the result of the run this one starts from."""
    start = time.time()
    run = Path(folder)
    if after is not None and after.get("status") == "failed":
        return {"status": "failed", "error": f"its warm start failed: {after.get('error')}", "seconds": 0.0}
    run.mkdir(parents=True, exist_ok=True)
    (run / "metrics.json").unlink(missing_ok=True)
    log = run / "train.log"
    with open(log, "w") as handle:
        handle.write("$ " + " ".join(command) + "\n")
        handle.flush()
        code = subprocess.run(
            [sys.executable, *command[1:]],
            cwd=REPO,
            env=env,
            stdout=handle,
            stderr=subprocess.STDOUT,
            preexec_fn=_normal_priority,
        ).returncode
    metrics_path = run / "metrics.json"
    if code != 0 or not metrics_path.is_file():
        tail = "\n".join(log.read_text(errors="replace").replace("\r", "\n").strip().splitlines()[-5:])
        return {"status": "failed", "error": f"exit status {code}; {log}:\n{tail}", "seconds": time.time() - start}
    metrics = json.loads(metrics_path.read_text())
    metrics["command"] = " ".join(command)
    text = json.dumps(metrics, indent=2) + "\n"
    write_atomic(metrics_path, lambda handle: handle.write(text.encode()))
    return {"status": "trained", "seconds": time.time() - start}


def _normal_priority() -> None:
    """Ray starts its workers niced; a training run should compete with other jobs as the call that
    launched it would (allowed for root only; otherwise it keeps the worker's priority)."""
    try:
        os.setpriority(os.PRIO_PROCESS, 0, 0)
    except OSError:
        pass


def subprocess_env(torch_threads: int) -> dict[str, str]:
    """This process's environment with the thread count pinned and progress bars quiet."""
    env = dict(os.environ)
    env.update(OMP_NUM_THREADS=str(torch_threads), MKL_NUM_THREADS=str(torch_threads), TQDM_MININTERVAL="30")
    return env


def with_warm_starts(methods: Sequence[str]) -> list[str]:
    """``methods`` in order, each preceded by the method it starts from if missing."""
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        raise UserValueError(f"unknown method(s) {unknown}; valid methods are {list(METHODS)}")
    ordered: list[str] = []
    for method in dict.fromkeys(methods):
        start = METHODS[method].warm_start
        if start and start not in ordered:
            print(f"compare: adding {start}, the warm start of {method}")
            ordered.append(start)
        if method not in ordered:
            ordered.append(method)
    return ordered


def launch(args: Args, methods: list[str], out: Path) -> list[tuple[str, int, str]]:
    """Train every missing (method, seed) as a Ray task; returns ``(method, seed, status)`` of each."""
    import ray  # optional extra: only the comparison needs it

    scale = "tiny" if args.tiny else "gpu" if args.gpu else None
    pending, outcomes, refs = [], [], {}
    for seed in args.seeds:  # seed-major: a complete first seed early
        for method in methods:
            folder = out / method / f"seed{seed}"
            if (folder / "metrics.json").is_file() and not args.retrain:
                outcomes.append((method, seed, "done before"))
                continue
            pending.append((method, seed, folder))
    if not pending:
        return outcomes
    if args.address:
        ray.init(address=args.address, log_to_driver=False)
    else:
        ray.init(num_cpus=args.jobs * args.torch_threads, include_dashboard=False, log_to_driver=False)
    task = ray.remote(num_cpus=args.torch_threads)(run_training)
    env = subprocess_env(args.torch_threads)
    for method, seed, folder in pending:
        spec = METHODS[method]
        command = spec.command(seed, folder.resolve())
        command += [*SCALES[scale][spec.trainer], *(spec.tiny if scale == "tiny" else ())] if scale else []
        command += ["--device", args.device, "--torch-threads", str(args.torch_threads)]
        if (folder / "resume.pt").is_file():  # an interrupted run (a signal, a time cap) continues
            command.append("--resume")
        after = refs.get((spec.warm_start, seed))
        refs[(method, seed)] = task.remote(command, env, str(folder.resolve()), after)
    started, names = time.time(), {ref: key for key, ref in refs.items()}
    waiting = list(refs.values())
    while waiting:
        [ready], waiting = ray.wait(waiting, num_returns=1)
        (method, seed), result = names[ready], ray.get(ready)
        outcomes.append((method, seed, result["status"]))
        stamp = f"[{len(outcomes):>2} +{(time.time() - started) / 60:5.1f} min] {method} seed {seed}"
        if result["status"] == "failed":
            print(f"{stamp}: FAILED {result['error']}", flush=True)
        else:
            accuracy = json.loads((out / method / f"seed{seed}" / "metrics.json").read_text())["test_accuracy"]
            figures = " / ".join(f"{100 * v:.1f}" for v in accuracy.values())
            print(
                f"{stamp}: trained in {result['seconds']:.0f} s; test accuracy at {'/'.join(accuracy)} glimpses: {figures} %",
                flush=True,
            )
    ray.shutdown()
    return outcomes


# --- tables --------------------------------------------------------------------------------------


def finished_runs(out: Path) -> dict[str, list[dict[str, Any]]]:
    """``metrics.json`` of every finished run under ``out``, by method in table order (unknown folders skipped)."""
    runs: dict[str, list[dict[str, Any]]] = {}
    for method in METHODS:
        for path in sorted((out / method).glob("seed*/metrics.json")):
            try:
                runs.setdefault(method, []).append(json.loads(path.read_text()))
            except json.JSONDecodeError as error:
                print(f"compare: skipped {path}: not valid JSON ({error}); retrain it with --retrain")
    return runs


def format_mean_std(values: Sequence[float], scale: float = 100.0, digits: int = 1) -> str:
    """``"mean ± std"`` of ``values * scale`` (sample std over seeds, ddof 1); one value: just it; none: ``—``."""
    numbers = [scale * float(v) for v in values]
    if not numbers:
        return "—"
    mean = sum(numbers) / len(numbers)
    if len(numbers) == 1:
        return f"{mean:.{digits}f}"
    std = math.sqrt(sum((v - mean) ** 2 for v in numbers) / (len(numbers) - 1))
    return f"{mean:.{digits}f} ± {std:.{digits}f}"


def _format_steps(steps: float) -> str:
    return f"{steps / 1e6:.1f}M" if steps >= 1e6 else f"{steps / 1e3:.0f}k" if steps >= 1e3 else f"{steps:.0f}"


def table_row(method: str, runs: Sequence[dict[str, Any]]) -> dict[str, str]:
    """One formatted row: accuracy mean ± std over the runs at each budget, mean train time and steps."""
    row = {"method": method}
    for budget in BUDGETS:
        row[str(budget)] = format_mean_std(
            [r["test_accuracy"][str(budget)] for r in runs if str(budget) in r["test_accuracy"]]
        )
    seconds = [float(r["train_seconds"]) for r in runs if r.get("train_seconds") is not None]
    steps = [float(r["env_steps"]) for r in runs if r.get("env_steps")]
    row["train_seconds"] = f"{sum(seconds) / len(seconds):.0f} s" if seconds else "—"
    row["env_steps"] = _format_steps(sum(steps) / len(steps)) if steps else "—"
    row["device"] = ", ".join(sorted({str(r.get("device")) for r in runs if r.get("device")})) or "—"
    row["seeds"] = ", ".join(str(r.get("seed")) for r in runs)
    return row


def gdfs_row(label: str = GDFS_LABEL) -> dict[str, str]:
    """GDFS's published figures as a table row named ``label``."""
    row = {"method": label}
    for budget in BUDGETS:
        low, high = GDFS_PUBLISHED.get(budget, (None, None))
        row[str(budget)] = "—" if low is None else f"~{low:g}" if low == high else f"~{low:g}–{high:g}"
    row.update(train_seconds="—", env_steps="—", device="—", seeds="—")
    return row


def markdown_table(
    rows: Sequence[dict[str, str]], columns: Sequence[str] = ("train_seconds", "env_steps", "device", "seeds")
) -> str:
    names = {"train_seconds": "train time (mean)", "env_steps": "env steps", "device": "device", "seeds": "seeds"}
    header = ["method", *[f"{b} glimpse{'s' if b > 1 else ''}" for b in BUDGETS], *[names[c] for c in columns]]
    keys = ["method", *[str(b) for b in BUDGETS], *columns]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] + ["--:"] * (len(header) - 1)) + "|"]
    return "\n".join(lines + ["| " + " | ".join(row[key] for key in keys) + " |" for row in rows])


def _commands(methods: Sequence[str], where: str) -> str:
    """Each method's command: the comparison's, and the training command it runs for seed K."""
    return "\n".join(
        f"- `{m}`: `python experiments/compare.py --methods {m}{' --gpu' if METHODS[m].gpu_only else ''}` runs "
        f"`{' '.join(METHODS[m].command('K', f'{where}/{m}/seedK'))}`"
        for m in methods
    )


def gpu_pending(runs: dict[str, list[dict[str, Any]]]) -> list[str]:
    """A paragraph saying that the GPU comparison is still to run, where no run of ``runs`` used a GPU."""
    if any(str(r.get("device", "")).startswith("cuda") for method in runs.values() for r in method):
        return []
    return [
        "Every run here is a CPU run: the comparison at its GPU budgets (`python experiments/compare.py --gpu "
        "--device cuda`, 3 seeds of every method) is pending a GPU machine.",
        "",
    ]


def results_doc(runs: dict[str, list[dict[str, Any]]], out: Path) -> str:
    """The text of docs/results.md, from ``runs`` (:func:`finished_runs`)."""
    headline = [m for m in METHODS if METHODS[m].headline and m in runs]
    pixel_rl = [m for m in METHODS if METHODS[m].pixel_rl and m in runs]
    gdfs = [m for m in METHODS if METHODS[m].gdfs and m in runs]
    short = [m for m in METHODS if m in runs and m not in headline and m not in pixel_rl and m not in gdfs]
    where = os.path.relpath(out, REPO) if out.is_relative_to(REPO) else str(out)
    parts = [
        "# Results",
        "",
        f"Generated by `python experiments/compare.py` from the `metrics.json` of every run in `{where}/`; "
        "do not edit by hand. Test accuracy (%) on the 10,000 MNIST test images with the `nearest` read-out "
        "(one real pixel per glimpse), mean ± std over the seeds listed. Train time is each script's own "
        "training clock, on the device listed; CPU runs shared 2 cores (AMD EPYC) with one torch thread each, "
        "so times vary with the load. A warm-started method's time excludes the run it starts from. "
        "The RL rows from scratch run on the shipped agent's 16x32 core (`--perception "
        "envs/pretrained/perception_shipped_agent.pt`), not on the environment's general packaged core, frozen "
        "or trained further (`--learn-perception`); the differentiable rows train "
        "their own core from `envs/pretrained/perception_random_glimpses.pt` (`--preset best` pretrains "
        "one), and a warm-started row runs the core of the agent it starts from.",
        "",
        *gpu_pending(runs),
        "## The best configuration of each family",
        "",
        markdown_table([*[table_row(m, runs[m]) for m in headline], gdfs_row()]),
        "",
        "![accuracy vs glimpses](../experiments/results/figures/accuracy_vs_glimpses.png)",
        "",
        _commands(headline, where),
        "",
        "## Every method at the short budget (5 epochs, 5M environment steps)",
        "",
        markdown_table([*[table_row(m, runs[m]) for m in short], gdfs_row()]),
        "",
        _commands(short, where),
        "",
    ]
    if pixel_rl:
        parts += [
            "## RL from scratch on the record observation (pixel actions, the shipped agent's core frozen)",
            "",
            markdown_table([*[table_row(m, runs[m]) for m in pixel_rl], gdfs_row()]),
            "",
            _commands(pixel_rl, where),
            "",
        ]
    if gdfs:
        beside = [m for m in ("differentiable-best",) if m in runs]
        parts += [
            "## GDFS run here, beside the best agent",
            "",
            "GDFS (Covert et al., ICML 2023) implemented from its description (`agents/gdfs.py`), trained on "
            "the same data and evaluated through the environment (pixel actions on the record observation); "
            "its accuracy is GDFS's own predictor on the pixels GDFS chose (`test_accuracy_env_core` in each "
            "run's `metrics.json`: the environment's packaged core on the same pixels). `gdfs-at-our-budget` "
            f"stops GDFS's schedule after {EQUAL_BUDGET_SECONDS} s of training, the mean training time of "
            "`differentiable-best`; `gdfs-full` runs it to its early stops.",
            "",
            markdown_table(
                [
                    *[table_row(m, runs[m]) for m in [*beside, *gdfs]],
                    gdfs_row("GDFS (Covert et al., ICML 2023): published"),
                ]
            ),
            "",
            _commands(gdfs, where),
            "",
        ]
    return "\n".join(parts)


def readme_table(runs: dict[str, list[dict[str, Any]]]) -> str:
    """The README's table: the headline rows and GDFS, with the command that reproduces each row."""
    rows = [table_row(m, runs[m]) for m in METHODS if METHODS[m].headline and m in runs]
    for row in rows:
        row["command"] = f"`python experiments/compare.py --methods {row['method']}`"
    gdfs = gdfs_row()
    gdfs["command"] = "—"
    header = "| agent | " + " | ".join(str(b) for b in BUDGETS) + " | seeds | reproduce |"
    lines = [header, "|---|" + "--:|" * len(BUDGETS) + "--:|---|"]
    for row in [*rows, gdfs]:
        lines.append(
            f"| {row['method']} | "
            + " | ".join(row[str(b)] for b in BUDGETS)
            + f" | {row['seeds']} | {row['command']} |"
        )
    return "\n".join(lines)


def replace_between_markers(text: str, block: str) -> str:
    start, end = README_MARKERS
    if start not in text or end not in text:
        raise ValueError(f"README.md lacks the markers {start} ... {end} around its results table; add them.")
    head, rest = text.split(start, 1)
    return f"{head}{start}\n{block}\n{end}{rest.split(end, 1)[1]}"


# --- figures -------------------------------------------------------------------------------------


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # files only; no display needed
    import matplotlib.pyplot as plt

    return plt


def plot_accuracy(runs: dict[str, list[dict[str, Any]]], methods: Sequence[str], path: Path) -> None:
    """Test accuracy (nearest read-out) at the table's budgets: mean over seeds, ±1 std band; GDFS as markers."""
    import numpy as np

    plt = _pyplot()
    figure, axis = plt.subplots(figsize=(10.5, 5.0))
    colours = plt.get_cmap("tab10")
    for k, method in enumerate(methods):
        budgets = [b for b in BUDGETS if all(str(b) in r["test_accuracy"] for r in runs[method])]
        values = 100.0 * np.array([[r["test_accuracy"][str(b)] for b in budgets] for r in runs[method]])
        mean = values.mean(axis=0)
        std = values.std(axis=0, ddof=1) if len(values) > 1 else np.zeros(len(budgets))
        axis.plot(budgets, mean, "o-", color=colours(k % 10), label=f"{method} (n={len(values)})", linewidth=1.8)
        axis.fill_between(budgets, mean - std, mean + std, color=colours(k % 10), alpha=0.18, linewidth=0)
    budgets = sorted(GDFS_PUBLISHED)
    centre = np.array([sum(GDFS_PUBLISHED[b]) / 2 for b in budgets])
    spread = np.array([(GDFS_PUBLISHED[b][1] - GDFS_PUBLISHED[b][0]) / 2 for b in budgets])
    axis.errorbar(budgets, centre, yerr=spread, fmt="k*", markersize=11, capsize=3, label="GDFS (published)")
    axis.axhline(10.0, color="grey", linestyle=":", linewidth=1)
    axis.set_xscale("log")
    axis.set_xticks(BUDGETS, [str(b) for b in BUDGETS])
    axis.set_xlabel("glimpses (pixels seen)")
    axis.set_ylabel("test accuracy, nearest read-out (%)")
    axis.set_title("MNIST test accuracy vs glimpses (mean over seeds, band = ±1 std)")
    axis.set_ylim(0, 100)
    axis.grid(alpha=0.3)
    axis.legend(fontsize=8, loc="center left", bbox_to_anchor=(1.01, 0.5))
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    plt.close(figure)


def glimpse_density(
    policy: GlimpsePolicy,
    core: PerceptionCore,
    images: torch.Tensor,
    labels: torch.Tensor,
    max_glimpses: int,
    batch_size: int = 2500,
) -> torch.Tensor:
    """Glimpse counts ``(10, 28, 28)`` (int64): entry ``[c, i, j]`` counts the glimpses, over all
    ``max_glimpses`` steps of the episodes on the ``images`` (``uint8``) of class ``c``, that read pixel
    ``(i, j)`` with the nearest read-out (coordinates rounded half to even, as ``Sampler("nearest")``)."""
    import torch

    from agents.rollout import run_episodes
    from envs.data import IMAGE_SIZE, NUM_CLASSES
    from envs.sampler import Sampler

    counts = torch.zeros(NUM_CLASSES * IMAGE_SIZE * IMAGE_SIZE, dtype=torch.long, device=images.device)
    for start in range(0, len(images), batch_size):
        batch = images[start : start + batch_size].float() / 255.0
        with torch.no_grad():
            episode = run_episodes(policy, core, Sampler("nearest"), batch, max_glimpses)
        pixel = episode.coords.round().long().clamp(0, IMAGE_SIZE - 1)  # (T, B, 2)
        label = labels[start : start + batch_size].expand(max_glimpses, -1)  # (T, B)
        flat = (label * IMAGE_SIZE + pixel[..., 0]) * IMAGE_SIZE + pixel[..., 1]
        counts += torch.bincount(flat.reshape(-1), minlength=counts.numel())
    return counts.view(NUM_CLASSES, IMAGE_SIZE, IMAGE_SIZE).cpu()


def plot_where_they_look(
    densities: dict[str, torch.Tensor], class_means: torch.Tensor, path: Path, title: str = ""
) -> None:
    """One row per method, one column per digit: the fraction of that class's glimpses at each pixel
    (square-root colour scale shared within a row), the class's mean digit outlined in cyan."""
    from matplotlib.colors import PowerNorm

    from envs.data import NUM_CLASSES

    plt = _pyplot()
    rows = len(densities)
    figure, axes = plt.subplots(rows, NUM_CLASSES, figsize=(1.5 * NUM_CLASSES + 1.6, 1.5 * rows + 0.6), squeeze=False)
    for r, (method, counts) in enumerate(densities.items()):
        fraction = counts.double() / counts.sum(dim=(1, 2), keepdim=True).clamp(min=1)
        norm = PowerNorm(0.5, vmin=0.0, vmax=max(float(fraction.max()), 1e-9))
        for c in range(NUM_CLASSES):
            axis = axes[r, c]
            axis.imshow(fraction[c].numpy(), cmap="magma", norm=norm, interpolation="nearest")
            axis.contour(class_means[c].numpy(), levels=[0.35], colors="cyan", linewidths=0.6)
            axis.set_xticks([])
            axis.set_yticks([])
            if r == 0:
                axis.set_title(str(c), fontsize=11)
        axes[r, 0].set_ylabel(method, fontsize=8, rotation=0, ha="right", va="center")
    figure.suptitle(
        title or "where they look: share of glimpses per pixel, by digit class (sqrt colour scale per row)", fontsize=10
    )
    figure.tight_layout(rect=(0.0, 0.0, 1.0, 1.0 - 0.35 / (1.5 * rows + 0.6)))
    figure.savefig(path, dpi=90)
    plt.close(figure)


def draw_where_they_look(methods: Sequence[str], seed: int, out: Path, path: Path, device: str) -> None:
    import torch

    from agents.checkpoint import load_agent
    from envs.config import resolve_device
    from envs.data import NUM_CLASSES, load_mnist

    test = load_mnist("test", resolve_device(device))
    class_means = torch.stack(
        [test.images[test.labels == c].float().mean(dim=0) / 255.0 for c in range(NUM_CLASSES)]
    ).cpu()
    densities = {}
    for method in methods:
        checkpoint = out / method / f"seed{seed}" / "checkpoint.pt"
        if not checkpoint.is_file():
            print(f"where_they_look: skipped {method}: no {checkpoint}")
            continue
        policy, core, saved = load_agent(checkpoint, test.images.device)
        torch.manual_seed(seed)  # the random-glimpses policy draws from torch's global generator
        densities[method] = glimpse_density(policy, core, test.images, test.labels, saved["glimpses"])
    if densities:
        plot_where_they_look(
            densities,
            class_means,
            path,
            title=f"where they look (seed {seed}): share of each digit's "
            "glimpses per pixel (sqrt colour scale per row; cyan: mean digit)",
        )
        print(f"wrote {path}")


# --- main ----------------------------------------------------------------------------------------


def main(args: Args) -> list[tuple[str, int, str]]:
    if args.tiny and args.gpu:
        raise UserValueError("--tiny and --gpu exclude each other: pick one budget")
    if not args.methods or not args.seeds:
        raise UserValueError("nothing to do: give at least one --methods and one --seeds")
    if args.jobs < 1 or args.torch_threads < 1:
        raise UserValueError(f"--jobs and --torch-threads must be >= 1, got {args.jobs} and {args.torch_threads}")
    out, doc = (REPO / args.out).resolve(), (REPO / args.doc).resolve()
    if (args.tiny or args.gpu) and out == RUNS.resolve():
        raise UserValueError(
            "--tiny and --gpu runs are not the results folder's budgets: pass --out DIR and --doc FILE elsewhere"
        )
    methods = with_warm_starts(args.methods)
    gpu_only = [m for m in methods if METHODS[m].gpu_only]
    if gpu_only and not (args.gpu or args.tiny):
        raise UserValueError(
            f"{gpu_only} run only at the GPU budgets: pass --gpu (or --tiny for a smoke test), or drop them from --methods"
        )
    print(
        f"compare: {len(methods)} methods x {len(args.seeds)} seeds as Ray tasks "
        f"({'cluster ' + args.address if args.address else f'local, {args.jobs} at a time'}, "
        f"{args.torch_threads} thread(s) each); runs in {out}"
    )
    outcomes = [] if args.no_train else launch(args, methods, out)

    runs = finished_runs(out)
    doc.parent.mkdir(parents=True, exist_ok=True)
    doc.write_text(results_doc(runs, out))
    written = [doc]
    if out == RUNS.resolve():
        README.write_text(replace_between_markers(README.read_text(), readme_table(runs)))
        figure = RESULTS / "figures" / "accuracy_vs_glimpses.png"
        written.append(README)
    else:
        figure = doc.parent / "accuracy_vs_glimpses.png"
    plot_accuracy(runs, [m for m in METHODS if m in runs and METHODS[m].headline] or list(runs), figure)
    written.append(figure)
    if args.where_they_look:
        where = figure.parent / "where_they_look.png"
        draw_where_they_look(methods, args.seeds[0], out, where, args.device)
    failed = [f"{m} seed {s}" for m, s, status in outcomes if status == "failed"]
    print(markdown_table([*[table_row(m, runs[m]) for m in methods if m in runs], gdfs_row()]))
    print(
        f"\nwrote {', '.join(os.path.relpath(p, Path.cwd()) for p in written)}"
        + (f"; FAILED: {', '.join(failed)}" if failed else "")
    )
    return outcomes


if __name__ == "__main__":
    import tyro

    outcomes = run_main(main, tyro.cli(Args, description=plain_text(__doc__)))
    sys.exit(1 if any(status == "failed" for _, _, status in outcomes) else 0)
