"""The best non-adaptive lookup-table classifier on a few pixels: how well can K pixels do?

    python train/oracle.py --pixels 406 409                 # flat row-major indices (i * 28 + j)
    python train/oracle.py --pixels 14,14 14,17 --levels 4  # (i, j) pairs, 4 grey-level bins
    python train/oracle.py --search 1                       # best single pixel (a second or so)
    python train/oracle.py --search 2 --json runs/oracle/pair.json   # best pair (~1-2 min on one CPU core)

Each chosen pixel's grey level v is quantised to floor(v * levels / 256); the table counts the class
histogram of every joint code on the fitting split (--fit) and predicts its majority class (ties:
smallest class; codes never seen on the fitting split: its overall majority class). In-sample
accuracy is the best any classifier of those quantised pixels can do on the fitting split;
held-out accuracy is measured on the other split (none for --fit all). See agents/oracle.py.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import tyro

from agents.oracle import format_summary, oracle_report, parse_pixels
from envs.config import resolve_device


@dataclass
class Args:
    pixels: tuple[str, ...] = ()
    """pixel positions: flat row-major indices (406 409) or i,j pairs (14,14 14,17); or use --search"""
    search: int | None = None
    """search exhaustively for the best K = 1 or 2 positions instead of giving --pixels"""
    levels: int = 256
    """grey-level bins per pixel, 1..256 (256 = exact grey level; bin = floor(v * levels / 256))"""
    fit: Literal["train", "test", "all"] = "train"
    """split the table is counted on; held-out is the other split (none for all = train + test)"""
    top: int = 5
    """with --search: how many of the best positions to report"""
    method: Literal["sparse", "dense"] = "sparse"
    """pair-search counting, both exact: sparse skips background pixels (~75 s on train at 256 levels, one core);
    dense counts every (image, pair) (~12-25 min on one core; a reference, or for a GPU)"""
    device: str = "auto"
    """cpu, cuda or auto"""
    json: str | None = None
    """also write the results to this JSON file"""


def main(args: Args) -> dict:
    device = resolve_device(args.device)
    pixels = parse_pixels(args.pixels) if args.pixels else None
    report = oracle_report(
        pixels=pixels,
        search_k=args.search,
        levels=args.levels,
        fit=args.fit,
        top=args.top,
        method=args.method,
        device=device,
        progress=_progress if args.search == 2 else None,
    )
    print(format_summary(report))
    if args.json:
        path = Path(args.json)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"args": vars(args), **report}, indent=2) + "\n")
        print(f"wrote {path}")
    return report


def _progress(done: int, total: int) -> None:
    if done % 98 == 0 or done == total:
        print(f"  pair search: {done}/{total} first pixels", file=sys.stderr, flush=True)


if __name__ == "__main__":
    main(tyro.cli(Args))
