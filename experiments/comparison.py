"""Machinery of ``train/compare.py``: run every (method, seed) in its own subprocess, evaluate it with
``train/evaluate.py``, aggregate, and draw the comparison figures.

A run lives in ``OUT/<method>/seed<k>/``: the training script's own outputs (``checkpoint.pt``,
``metrics.json``, ...), ``train.log`` (its stdout and stderr), ``evaluate.log`` and
``evaluation.json`` (what ``train/evaluate.py`` printed). A folder that already holds
``checkpoint.pt`` and ``metrics.json`` is not retrained.
"""

from __future__ import annotations

import csv
import json
import math
import os
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only; no display needed
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from matplotlib.colors import PowerNorm  # noqa: E402

from agents.rollout import GlimpsePolicy, run_episodes  # noqa: E402
from envs.data import IMAGE_SIZE, NUM_CLASSES  # noqa: E402
from envs.perception import PerceptionCore  # noqa: E402
from envs.sampler import Sampler  # noqa: E402

REPO = Path(__file__).resolve().parents[1]

#: Glimpse budgets of the summary table and CSV.
BUDGETS = (1, 2, 5, 10, 25)

#: GDFS (Covert et al., ICML 2023), MNIST, accuracy in percent read off the paper: published, not run here.
#: ``(low, high)`` where the paper's curve only gives a range; 1 and 2 pixels are not reported.
GDFS_PUBLISHED: dict[int, tuple[float, float]] = {5: (69.0, 69.0), 10: (87.0, 87.0), 25: (95.5, 96.0)}
GDFS_LABEL = "GDFS (Covert et al., ICML 2023): published, not run here"


@dataclass(frozen=True)
class Trainer:
    """How to call one training script.

    :param script: path from the repository root.
    :param threads_flag: the script takes ``--torch-threads`` (otherwise only ``OMP_NUM_THREADS`` limits it).
    :param out_file: ``--out`` names this file inside the run folder instead of the folder itself
        (``pretrain_perception.py`` writes a core checkpoint there and ``metrics.json`` beside it).
    :param extra: flags always passed (e.g. no progress bar in a log file).
    """

    script: str
    threads_flag: bool = True
    out_file: str | None = None
    extra: tuple[str, ...] = ()


TRAINERS: dict[str, Trainer] = {
    "pretrain": Trainer("train/pretrain_perception.py", threads_flag=False, out_file="perception.pt"),
    "differentiable": Trainer("train/differentiable.py"),
    "reinforce": Trainer("train/reinforce.py"),
    "ppo": Trainer("train/ppo.py", extra=("--no-progress-bar",)),
}


@dataclass(frozen=True)
class Method:
    """A way of learning where to look: a trainer plus the flags that make it this method."""

    trainer: str
    flags: tuple[str, ...] = ()
    warm_start: str | None = None
    """another method whose run of the same seed this one starts from (``--init-from`` its checkpoint);
    it is trained first"""


@dataclass
class Job:
    """One (method, seed) run: where it lives and the commands that train and evaluate it."""

    method: str
    seed: int
    folder: Path
    trainer: str
    train_command: list[str]
    evaluate_command: list[str]
    env: dict[str, str]
    after: str | None = None
    """the method whose job (same seed) must finish first (:attr:`Method.warm_start`)"""


@dataclass
class JobResult:
    """What a job produced. ``status``: ``trained``, ``loaded`` (found on disk) or ``failed``."""

    method: str
    seed: int
    folder: Path
    status: str
    error: str | None = None
    metrics: dict[str, Any] = field(default_factory=dict)
    evaluation: dict[str, Any] = field(default_factory=dict)
    wall_seconds: float = 0.0


# A runner executes ``command`` with ``env``, appending stderr (and stdout unless captured) to
# ``log``; it returns ``(exit status, captured stdout or "")``. Tests replace it with a fake.
Runner = Callable[[Sequence[str], dict[str, str], Path, bool], tuple[int, str]]


def run_logged(command: Sequence[str], env: dict[str, str], log: Path, capture_stdout: bool = False) -> tuple[int, str]:
    """The real :data:`Runner`: ``subprocess.run`` from the repository root."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "a") as handle:
        handle.write(f"$ {' '.join(command)}\n")
        handle.flush()
        done = subprocess.run(
            list(command), cwd=REPO, env=env, stdout=subprocess.PIPE if capture_stdout else handle, stderr=handle, text=True
        )
    return done.returncode, done.stdout if capture_stdout else ""


def run_folder(out: str | os.PathLike, method: str, seed: int) -> Path:
    return Path(out) / method / f"seed{seed}"


def is_trained(folder: Path) -> bool:
    """A run is done when its folder holds both ``checkpoint.pt`` and ``metrics.json``."""
    return (folder / "checkpoint.pt").is_file() and (folder / "metrics.json").is_file()


def subprocess_env(torch_threads: int) -> dict[str, str]:
    """This process's environment with the thread count pinned (``OMP_NUM_THREADS``, MKL's too)."""
    env = dict(os.environ)
    env.update(OMP_NUM_THREADS=str(torch_threads), MKL_NUM_THREADS=str(torch_threads), TQDM_MININTERVAL="5")
    return env


def make_job(
    method: str,
    spec: Method,
    seed: int,
    out: str | os.PathLike,
    budget_flags: Sequence[str],
    device: str,
    torch_threads: int,
    python: str = sys.executable,
) -> Job:
    """The job of ``method`` with ``seed``: ``python SCRIPT METHOD-FLAGS BUDGET-FLAGS --seed --device --out``."""
    trainer = TRAINERS[spec.trainer]
    folder = run_folder(out, method, seed).resolve()
    out_arg = folder / trainer.out_file if trainer.out_file else folder
    command = [python, str(REPO / trainer.script), *spec.flags, *budget_flags, *trainer.extra]
    if spec.warm_start:
        command += ["--init-from", str(run_folder(out, spec.warm_start, seed).resolve() / "checkpoint.pt")]
    command += ["--seed", str(seed), "--device", device, "--out", str(out_arg)]
    if trainer.threads_flag:
        command += ["--torch-threads", str(torch_threads)]
    evaluate = [python, str(REPO / "train/evaluate.py"), "--checkpoint", str(folder / "checkpoint.pt"),
                "--device", device, "--seed", str(seed)]
    return Job(method, seed, folder, spec.trainer, command, evaluate, subprocess_env(torch_threads), spec.warm_start)


def write_random_glimpses_checkpoint(folder: Path, glimpses: int) -> None:
    """Wrap the core ``pretrain_perception.py`` wrote (``perception.pt``) into an agent checkpoint with
    the :class:`~agents.baselines.RandomGlimpses` policy, so ``train/evaluate.py`` can load it."""
    from agents.baselines import RandomGlimpses
    from agents.checkpoint import save_agent

    core = PerceptionCore.load(folder / "perception.pt")
    save_agent(folder / "checkpoint.pt", "random-glimpses", RandomGlimpses(), core, glimpses, core_file="perception.pt")


def _log_tail(log: Path, lines: int = 6) -> str:
    """The last non-empty ``lines`` of ``log`` (progress-bar carriage returns split into lines)."""
    if not log.is_file():
        return ""
    text = log.read_text(errors="replace").replace("\r", "\n")
    return "\n".join([line for line in text.splitlines() if line.strip()][-lines:])


def _cached_evaluation(job: Job) -> dict[str, Any] | None:
    """``evaluation.json`` if it is newer than the checkpoint and was made with this seed."""
    path, checkpoint = job.folder / "evaluation.json", job.folder / "checkpoint.pt"
    if not path.is_file() or path.stat().st_mtime < checkpoint.stat().st_mtime:
        return None
    evaluation = json.loads(path.read_text())
    ok = evaluation.get("seed") == job.seed and "accuracy_by_glimpse" in evaluation
    return evaluation if ok else None


def run_job(job: Job, retrain: bool = False, glimpses: int = 25, runner: Runner = run_logged) -> JobResult:
    """Train ``job`` unless its folder already holds a finished run (or ``retrain``), then evaluate it
    (nearest read-out, 10,000 test images) unless a fresh ``evaluation.json`` exists. Never raises:
    a failure comes back as ``status="failed"`` with the reason."""
    start = time.time()
    result = JobResult(job.method, job.seed, job.folder, "loaded")
    try:
        if retrain or not is_trained(job.folder):
            result.status = "trained"
            job.folder.mkdir(parents=True, exist_ok=True)
            for stale in ("checkpoint.pt", "metrics.json", "evaluation.json"):
                (job.folder / stale).unlink(missing_ok=True)
            log = job.folder / "train.log"
            code, _ = runner(job.train_command, job.env, log, False)
            if code != 0:
                raise RuntimeError(f"training exited with status {code}; {log}:\n{_log_tail(log)}")
            if job.trainer == "pretrain":
                write_random_glimpses_checkpoint(job.folder, glimpses)
            if not is_trained(job.folder):
                raise RuntimeError(f"training finished but {job.folder} lacks checkpoint.pt or metrics.json")
        result.metrics = json.loads((job.folder / "metrics.json").read_text())
        evaluation = None if retrain else _cached_evaluation(job)
        if evaluation is None:
            log = job.folder / "evaluate.log"
            code, stdout = runner(job.evaluate_command, job.env, log, True)
            if code != 0:
                raise RuntimeError(f"evaluation exited with status {code}; {log}:\n{_log_tail(log)}")
            evaluation = json.loads(stdout)
            (job.folder / "evaluation.json").write_text(json.dumps(evaluation, indent=2) + "\n")
        result.evaluation = evaluation
    except Exception as error:  # noqa: BLE001 - one run's crash is reported, not fatal
        result.status, result.error = "failed", f"{type(error).__name__}: {error}"
    result.wall_seconds = time.time() - start
    return result


def run_jobs(
    jobs: Sequence[Job],
    parallel: int,
    retrain: bool = False,
    glimpses: int = 25,
    runner: Runner = run_logged,
    report: Callable[[int, int, JobResult], None] | None = None,
) -> list[JobResult]:
    """Run ``jobs`` ``parallel`` at a time (threads, each waiting on its subprocess); results in job order.

    Jobs with a prerequisite (:attr:`Job.after`) run in a second round, after every job without one;
    if their prerequisite failed they fail too, without running."""
    results: dict[int, JobResult] = {}

    def record(k: int, result: JobResult) -> None:
        results[k] = result
        if report:
            report(len(results), len(jobs), result)

    for first_round in (True, False):
        with ThreadPoolExecutor(max_workers=max(1, parallel)) as pool:
            futures = {}
            for k, job in enumerate(jobs):
                if (job.after is None) != first_round:
                    continue
                failed = [r for r in results.values() if r.method == job.after and r.seed == job.seed and r.status == "failed"]
                if failed:
                    error = f"RuntimeError: its warm start {job.after} seed {job.seed} failed ({failed[0].error})"
                    record(k, JobResult(job.method, job.seed, job.folder, "failed", error))
                else:
                    futures[pool.submit(run_job, job, retrain, glimpses, runner)] = k
            for future in as_completed(futures):
                record(futures[future], future.result())
    return [results[k] for k in range(len(jobs))]


# --- aggregation ---------------------------------------------------------------------------------


def summary_row(result: JobResult) -> dict[str, Any]:
    """One CSV row: accuracies as fractions (empty when unknown), cost and provenance."""
    table = result.evaluation.get("test_accuracy", {})
    row: dict[str, Any] = {"method": result.method, "seed": result.seed, "status": result.status}
    for budget in BUDGETS:
        row[f"acc_{budget}"] = table.get(str(budget), "")
    row["train_seconds"] = result.metrics.get("train_seconds", "")
    row["env_steps"] = result.metrics.get("env_steps", "")
    row["device"] = result.metrics.get("device", "")
    row["agent"] = result.metrics.get("agent", "")
    row["folder"] = str(result.folder)
    row["error"] = (result.error or "").splitlines()[0] if result.error else ""
    return row


CSV_FIELDS = ["method", "seed", "status", *[f"acc_{b}" for b in BUDGETS], "train_seconds", "env_steps", "device",
              "agent", "folder", "error"]


def write_csv(rows: Sequence[dict[str, Any]], path: str | os.PathLike) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=CSV_FIELDS)
        writer.writeheader()
        writer.writerows(rows)


def _numbers(values: Sequence[Any]) -> list[float]:
    return [float(v) for v in values if v not in ("", None)]


def format_mean_std(values: Sequence[Any], scale: float = 100.0, digits: int = 1) -> str:
    """``"mean ± std"`` of ``values * scale`` (sample std over seeds, ddof 1); one value: just it; none: ``—``."""
    numbers = [scale * v for v in _numbers(values)]
    if not numbers:
        return "—"
    mean = sum(numbers) / len(numbers)
    if len(numbers) == 1:
        return f"{mean:.{digits}f}"
    std = math.sqrt(sum((v - mean) ** 2 for v in numbers) / (len(numbers) - 1))
    return f"{mean:.{digits}f} ± {std:.{digits}f}"


def _format_steps(steps: float) -> str:
    if steps >= 1e6:
        return f"{steps / 1e6:.1f}M"
    if steps >= 1e3:
        return f"{steps / 1e3:.0f}k"
    return f"{steps:.0f}"


def aggregate(rows: Sequence[dict[str, Any]], methods: Sequence[str]) -> list[dict[str, str]]:
    """One formatted row per method (in ``methods`` order) over its seeds that did not fail."""
    table = []
    for method in methods:
        mine = [row for row in rows if row["method"] == method]
        ok = [row for row in mine if row["status"] != "failed"]
        line = {"method": method}
        for budget in BUDGETS:
            line[str(budget)] = format_mean_std([row[f"acc_{budget}"] for row in ok])
        seconds = _numbers([row["train_seconds"] for row in ok])
        steps = _numbers([row["env_steps"] for row in ok])
        line["train_seconds"] = f"{sum(seconds) / len(seconds):.0f} s" if seconds else "—"
        line["env_steps"] = _format_steps(sum(steps) / len(steps)) if steps else "—"
        line["device"] = ", ".join(sorted({str(row["device"]) for row in ok if row["device"]})) or "—"
        failed = len(mine) - len(ok)
        line["seeds"] = f"{len(ok)}" + (f" ({failed} failed)" if failed else "")
        table.append(line)
    return table


def gdfs_row() -> dict[str, str]:
    line = {"method": GDFS_LABEL}
    for budget in BUDGETS:
        low_high = GDFS_PUBLISHED.get(budget)
        if low_high is None:
            line[str(budget)] = "—"
        else:
            low, high = low_high
            line[str(budget)] = f"~{low:g}" if low == high else f"~{low:g}–{high:g}"
    line.update(train_seconds="—", env_steps="—", device="—", seeds="—")
    return line


def markdown_table(lines: Sequence[dict[str, str]]) -> str:
    header = ["method", *[f"{b} glimpse{'s' if b > 1 else ''}" for b in BUDGETS], "train time (mean)", "env steps",
              "device", "seeds"]
    keys = ["method", *[str(b) for b in BUDGETS], "train_seconds", "env_steps", "device", "seeds"]
    out = ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] + ["--:"] * (len(header) - 1)) + "|"]
    out += ["| " + " | ".join(line[key] for key in keys) + " |" for line in lines]
    return "\n".join(out)


def write_markdown(lines: Sequence[dict[str, str]], path: str | os.PathLike, preamble: str = "") -> str:
    text = (preamble + "\n\n" if preamble else "") + markdown_table([*lines, gdfs_row()]) + "\n"
    Path(path).write_text(text)
    return text


# --- figures -------------------------------------------------------------------------------------


def plot_accuracy_curves(results: Sequence[JobResult], methods: Sequence[str], path: str | os.PathLike) -> None:
    """Test accuracy (nearest read-out) after 1..T glimpses: mean over seeds, ±1 std band; GDFS as markers."""
    figure, axis = plt.subplots(figsize=(11.5, 5.5))
    colours = plt.get_cmap("tab10")
    for k, method in enumerate(methods):
        curves = [r.evaluation["accuracy_by_glimpse"] for r in results if r.method == method and r.status != "failed"]
        if not curves:
            continue
        length = min(len(c) for c in curves)
        values = 100.0 * np.array([c[:length] for c in curves])
        mean, std = values.mean(axis=0), values.std(axis=0, ddof=1) if len(curves) > 1 else np.zeros(length)
        steps = np.arange(1, length + 1)
        style = ("-", "--", ":")[k // 10 % 3]  # tab10 has 10 colours: methods 11+ reuse them, dashed
        axis.plot(steps, mean, color=colours(k % 10), linestyle=style, label=f"{method} (n={len(curves)})", linewidth=1.8)
        axis.fill_between(steps, mean - std, mean + std, color=colours(k % 10), alpha=0.18, linewidth=0)
    budgets = sorted(GDFS_PUBLISHED)
    centre = np.array([sum(GDFS_PUBLISHED[b]) / 2 for b in budgets])
    spread = np.array([(GDFS_PUBLISHED[b][1] - GDFS_PUBLISHED[b][0]) / 2 for b in budgets])
    axis.errorbar(budgets, centre, yerr=spread, fmt="k*", markersize=11, capsize=3, label="GDFS (published, not run here)")
    axis.axhline(10.0, color="grey", linestyle=":", linewidth=1)
    axis.set_xlabel("glimpses (pixels seen)")
    axis.set_ylabel("test accuracy, nearest read-out (%)")
    axis.set_title("MNIST test accuracy vs number of glimpses (mean over seeds, band = ±1 std)")
    axis.set_ylim(0, 100)
    axis.set_xlim(0.5, None)
    axis.grid(alpha=0.3)
    axis.legend(fontsize=8, loc="center left", bbox_to_anchor=(1.01, 0.5))  # outside: keeps the GDFS markers visible
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


@torch.no_grad()
def glimpse_density(
    policy: GlimpsePolicy,
    core: PerceptionCore,
    images: torch.Tensor,
    labels: torch.Tensor,
    glimpses: int,
    batch_size: int = 2500,
) -> torch.Tensor:
    """Glimpse counts ``(10, 28, 28)`` (int64): entry ``[c, i, j]`` counts the glimpses, over all
    ``glimpses`` steps of the episodes on the ``images`` (``uint8``) of class ``c``, that read pixel
    ``(i, j)`` with the nearest read-out (coordinates rounded half to even, as ``Sampler("nearest")``)."""
    counts = torch.zeros(NUM_CLASSES * IMAGE_SIZE * IMAGE_SIZE, dtype=torch.long, device=images.device)
    for start in range(0, len(images), batch_size):
        batch = images[start : start + batch_size].float() / 255.0
        episode = run_episodes(policy, core, Sampler("nearest"), batch, glimpses)
        pixel = episode.coords.round().long().clamp(0, IMAGE_SIZE - 1)  # (T, B, 2)
        label = labels[start : start + batch_size].expand(glimpses, -1)  # (T, B)
        flat = (label * IMAGE_SIZE + pixel[..., 0]) * IMAGE_SIZE + pixel[..., 1]
        counts += torch.bincount(flat.reshape(-1), minlength=counts.numel())
    return counts.view(NUM_CLASSES, IMAGE_SIZE, IMAGE_SIZE).cpu()


def plot_where_they_look(
    densities: dict[str, torch.Tensor], class_means: torch.Tensor, path: str | os.PathLike, title: str = ""
) -> None:
    """One row per method, one column per digit: the fraction of that class's glimpses at each pixel
    (square-root colour scale shared within a row), the class's mean digit outlined in cyan."""
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
    figure.suptitle(title or "where they look: share of glimpses per pixel, by digit class (sqrt colour scale per row)",
                    fontsize=10)
    figure.tight_layout(rect=(0.0, 0.0, 1.0, 1.0 - 0.35 / (1.5 * rows + 0.6)))
    figure.savefig(path, dpi=90)
    plt.close(figure)
