"""GDFS against the best preset along their training: accuracy against optimizer steps, and where the
lines through the curves' tails reach GDFS's published figures.

Both training scripts record a curve in their run's ``metrics.json`` (``--curve-images``): accuracy
at 5, 10 and 25 glimpses on the first test images after 0, 1, 2, 5, 10, 20, 50, ... optimizer steps
and after the last. GDFS's steps are selector steps of its stage 2 (batch 128, 50 selections each);
the best preset's are dual-optimizer steps (batch 256, 25 glimpses each).

This script gathers those curves into one results file, draws them on one plot (steps on a log
scale, GDFS's published figures marked at its step count) and fits, per method and glimpse count, a
power law through the error rate, ``100 - accuracy = 10**a * steps**b`` (a line in log-log), through
every curve point from ``--fit-from`` steps on (all seeds together). The step count at which the law
reaches a target is an extrapolation of the curves' tails, not a measurement, and the results file
says so; GDFS's law read at GDFS's published step count, beside its published figure, checks it.

    python experiments/gdfs_curve.py                     # gather the runs' curves, fit, plot
    python experiments/gdfs_curve.py --from-results      # refit and replot the committed results file

The results: docs/studies/gdfs-run-here.md (``gdfs_vs_best_curve.json`` in experiments/results/studies/,
the plot in experiments/results/figures/).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import tyro

try:
    from experiments.compare import REPO
except ModuleNotFoundError:  # run as ``python experiments/gdfs_curve.py``: its folder is on sys.path
    from compare import REPO  # type: ignore[import-not-found,no-redef]

from agents.cli import UserFileNotFoundError, UserValueError, plain_text, run_main

#: The glimpse counts of the curves.
GLIMPSES = ("5", "10", "25")
#: GDFS's published accuracy (%) at 5 / 10 / 25 pixels (the mid-points of its notebook's three commits)
#: and its stage-2 optimizer steps (149 epochs of 390 batches), marked on the plot as the targets.
PUBLISHED = {"steps": 58_000, "accuracy": {"5": 69.3, "10": 87.4, "25": 95.8}}
#: The targets the fits are solved for (%), at 5 / 10 / 25 glimpses.
TARGETS = {"5": 70.0, "10": 88.0, "25": 96.0}
#: The figures of a run's ``metrics.json`` kept beside its curve.
FINAL = ("test_accuracy", "optimizer_steps", "train_seconds", "stopped", "command")
#: The committed results file.
RESULTS = REPO / "experiments" / "results" / "studies" / "gdfs_vs_best_curve.json"
#: The plot.
FIGURE = REPO / "experiments" / "results" / "figures" / "gdfs_vs_best_curve.png"


@dataclass
class Args:
    gdfs: tuple[str, ...] = tuple(f"experiments/results/runs/gdfs-at-our-budget/seed{seed}" for seed in (0, 1, 2))
    """GDFS run folders (each with a metrics.json holding a curve)"""
    best: tuple[str, ...] = ("runs/best-curve",)
    """--preset best run folders made with --curve-images (train/differentiable.py)"""
    from_results: bool = False
    """read the curves from --results instead of the run folders (which need not be there)"""
    results: str = str(RESULTS.relative_to(REPO))
    """the results file written (or read, with --from-results)"""
    figure: str = str(FIGURE.relative_to(REPO))
    """the plot written"""
    fit_from: int = 50
    """the fits use the curve points from this many steps on"""


def read_curve(folder: str) -> tuple[str, list[dict[str, Any]], dict[str, Any]]:
    """The seed name, curve and final figures (``test_accuracy``, ``optimizer_steps``,
    ``train_seconds``, ``stopped``, ``command``, where the run has them) of the run in ``folder``.

    :raises UserFileNotFoundError: no ``metrics.json`` there.
    :raises UserValueError: it holds no curve.
    """
    path = REPO / folder / "metrics.json"
    if not path.is_file():
        raise UserFileNotFoundError(f"{path} not found; pass run folders that hold a finished run, or --from-results.")
    metrics = json.loads(path.read_text())
    if not metrics.get("curve"):
        raise UserValueError(f"{path} holds no curve; train it with --curve-images, or leave the folder out.")
    final = {key: metrics[key] for key in FINAL if key in metrics}
    return f"seed{metrics['seed']}", metrics["curve"], final


def fit(curves: dict[str, list[dict[str, Any]]], glimpses: str, fit_from: int) -> dict[str, Any]:
    """The power law ``error (%) = 10**a * steps**b`` (a line in log-log) fitted by least squares to
    the points of every curve in ``curves`` from ``fit_from`` steps on; the steps at which it reaches
    the target accuracy, and the accuracy it gives at GDFS's published step count.

    :return: ``{"points", "log10_error_at_1", "exponent", "target", "steps_to_target",
        "accuracy_at_published_steps"}``; ``steps_to_target`` is ``None`` where the error does not fall.
    """
    points = [
        (math.log10(point["step"]), math.log10(100 - 100 * point["accuracy"][glimpses]))
        for curve in curves.values()
        if isinstance(curve, list)
        for point in curve
        if point["step"] >= fit_from
    ]
    if len(points) < 2:
        raise UserValueError(f"fewer than two curve points from step {fit_from} on; lower --fit-from.")
    n = len(points)
    mean_x = sum(x for x, _ in points) / n
    mean_y = sum(y for _, y in points) / n
    spread = sum((x - mean_x) ** 2 for x, _ in points)
    slope = sum((x - mean_x) * (y - mean_y) for x, y in points) / spread
    intercept = mean_y - slope * mean_x
    target = TARGETS[glimpses]
    steps = round(10 ** ((math.log10(100 - target) - intercept) / slope)) if slope < 0 else None
    at_published = 100 - 10 ** (intercept + slope * math.log10(PUBLISHED["steps"]))
    return {
        "points": n,
        "log10_error_at_1": round(intercept, 3),
        "exponent": round(slope, 3),
        "target": target,
        "steps_to_target": steps,
        "accuracy_at_published_steps": round(at_published, 1),
    }


def plot(results: dict[str, Any], figure: Path) -> None:
    """Draw accuracy against steps (log scale), one panel per glimpse count: every seed's curve, each
    method's fitted power law (dashed) and GDFS's published figure."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colours = {"gdfs": "tab:orange", "best": "tab:blue"}
    labels = {"gdfs": "GDFS (selector steps)", "best": "--preset best (dual steps)"}
    fig, axes = plt.subplots(1, len(GLIMPSES), figsize=(12, 3.8), sharex=True)
    for axis, glimpses in zip(axes, GLIMPSES):
        for method in ("gdfs", "best"):
            for k, curve in enumerate(c for c in results[method].values() if isinstance(c, list)):
                points = [p for p in curve if p["step"] > 0]
                axis.plot(
                    [p["step"] for p in points],
                    [100 * p["accuracy"][glimpses] for p in points],
                    color=colours[method],
                    alpha=0.8,
                    marker=".",
                    label=labels[method] if k == 0 else None,
                )
            law = results["fits"][method][glimpses]
            steps = [10 ** (k / 4) for k in range(round(4 * math.log10(results["fit_from"])), 22)]
            axis.plot(
                steps,
                [100 - 10 ** (law["log10_error_at_1"] + law["exponent"] * math.log10(s)) for s in steps],
                color=colours[method],
                linestyle="--",
                linewidth=1,
                label="power law through the tail (extrapolated)" if method == "best" else None,
            )
        axis.plot(
            PUBLISHED["steps"],
            PUBLISHED["accuracy"][glimpses],
            "*",
            color="black",
            markersize=11,
            label="GDFS published",
        )
        axis.set_xscale("log")
        axis.set_title(f"{glimpses} glimpses")
        axis.set_xlabel("optimizer steps")
        axis.grid(alpha=0.3)
    axes[0].set_ylabel("test accuracy (%)")
    axes[0].legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    figure.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(figure, dpi=110)
    plt.close(fig)


def main(args: Args) -> dict[str, Any]:
    """Gather (or read) the curves, fit their tails, write the results file and the plot."""
    results_path = REPO / args.results
    if args.from_results:
        if not results_path.is_file():
            raise UserFileNotFoundError(f"{results_path} not found; run without --from-results to gather the runs.")
        results = json.loads(results_path.read_text())
    else:
        earlier = json.loads(results_path.read_text()) if results_path.is_file() else {}
        results = {
            "gdfs": {},
            "best": {},
            "final": {"gdfs": {}, "best": {}},
            "commands": earlier.get("commands", {}),  # of runs whose metrics.json does not name it
            "machine": earlier.get("machine", ""),
        }
        for method, folders in (("gdfs", args.gdfs), ("best", args.best)):
            for folder in folders:
                seed, curve, final = read_curve(folder)
                results[method][seed] = curve
                results["final"][method][seed] = final
                if "command" in final:
                    results["commands"][f"{method} {seed}"] = final["command"]
        results["what"] = (
            "test accuracy (first 2,000 test images, nearest) at 5 / 10 / 25 glimpses against optimizer "
            "steps: GDFS's stage-2 (selector) steps, and --preset best's dual-optimizer steps, each from "
            "its run's metrics.json 'curve'"
        )
    results["fits"] = {
        method: {glimpses: fit(results[method], glimpses, args.fit_from) for glimpses in GLIMPSES}
        for method in ("gdfs", "best")
    }
    results["fits_what"] = (
        f"an extrapolation, not a measurement: least-squares line log10(100 - accuracy %) = log10_error_at_1 "
        f"+ exponent * log10(steps) through every seed's curve points from {args.fit_from} steps on; "
        "steps_to_target is where it reaches the target, accuracy_at_published_steps what it gives at "
        "GDFS's published step count; python experiments/gdfs_curve.py"
    )
    results["published"] = PUBLISHED
    results["fit_from"] = args.fit_from
    results_path.write_text(json.dumps(results, indent=1) + "\n")
    plot(results, REPO / args.figure)
    for method, fits in results["fits"].items():
        line = ", ".join(
            f"{g}: error ~ steps^{f['exponent']:.2f}, {f['target']:.0f}% at "
            + (f"{f['steps_to_target']:,} steps" if f["steps_to_target"] else "no step count")
            + f", {f['accuracy_at_published_steps']:.1f}% at {PUBLISHED['steps']:,}"
            for g, f in fits.items()
        )
        print(f"{method}: {line}")
    print(f"wrote {args.results} and {args.figure}")
    return results


if __name__ == "__main__":
    Args.__doc__ = plain_text(__doc__)
    run_main(main, tyro.cli(Args))
