"""Fill the measured figures of README.md and docs/ from the results JSON they come from.

    python experiments/doc_figures.py            # rewrite every marked figure from its JSON
    python experiments/doc_figures.py --check    # exit 1 and list the figures that disagree with their JSON

A figure in a page is written between two markers that name where it comes from::

    <!-- figure experiments/results/off_the_shelf/ppo/seed*.json test_accuracy.25 -->40.5 ± 0.9<!-- /figure -->

* the first word is a glob relative to the repository root: one file gives its value, several give
  ``mean ± std`` over the files (sample std, as in docs/results.md);
* the second is the dotted key inside each file (``metrics.test_accuracy.25``);
* optional ``scale=1`` and ``digits=0`` change the default (a fraction shown in percent, one decimal).

Markers are HTML comments, so the rendered page shows the figure alone. The test suite runs the check,
so a page cannot drift from the JSON it cites.
"""

from __future__ import annotations

import json
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import tyro

try:
    from experiments.compare import REPO, format_mean_std
except ModuleNotFoundError:  # run as ``python experiments/doc_figures.py``: its folder is on sys.path
    from compare import REPO, format_mean_std  # type: ignore[import-not-found,no-redef]

from agents.cli import UserValueError, plain_text, run_main

#: one marked figure: ``<!-- figure GLOB KEY [scale=S] [digits=D] -->TEXT<!-- /figure -->``
FIGURE = re.compile(r"<!-- figure (?P<spec>[^>]*?) -->(?P<text>.*?)<!-- /figure -->")


@dataclass
class Args:
    check: bool = False
    """report the figures that disagree with their JSON and exit 1, changing no file"""


def pages(repo: Path = REPO) -> list[Path]:
    """README.md and every Markdown page under docs/."""
    return [repo / "README.md", *sorted((repo / "docs").rglob("*.md"))]


def _lookup(data: Any, key: str, path: Path) -> float:
    for part in key.split("."):
        if not isinstance(data, dict) or part not in data:
            raise UserValueError(f"{path}: no key {key!r} (missing {part!r}); fix the figure marker or the JSON.")
        data = data[part]
    if not isinstance(data, int | float) or isinstance(data, bool):
        raise UserValueError(f"{path}: {key!r} is {data!r}, not a number; point the figure marker at a number.")
    return float(data)


def figure_text(spec: str, repo: Path = REPO) -> str:
    """The text a marker's ``spec`` (``GLOB KEY [scale=S] [digits=D]``) stands for, read from its JSON.

    :param spec: the marker's words
    :param repo: the folder the glob is relative to
    :return: the formatted figure (``format_mean_std``)
    """
    words = spec.split()
    if len(words) < 2:
        raise UserValueError(f"figure marker {spec!r}: write '<!-- figure GLOB KEY [scale=S] [digits=D] -->'.")
    pattern, key, options = words[0], words[1], dict(word.split("=", 1) for word in words[2:] if "=" in word)
    unknown = sorted(set(options) - {"scale", "digits"}) + [word for word in words[2:] if "=" not in word]
    if unknown:
        raise UserValueError(f"figure marker {spec!r}: unknown option(s) {unknown}; use scale= and digits=.")
    files = sorted(repo.glob(pattern))
    if not files:
        raise UserValueError(
            f"figure marker {spec!r}: no file matches {pattern!r}; fix the path or run the experiment."
        )
    values = [_lookup(json.loads(path.read_text()), key, path) for path in files]
    return format_mean_std(values, scale=float(options.get("scale", 100.0)), digits=int(options.get("digits", 1)))


def fill(text: str, repo: Path = REPO) -> tuple[str, list[tuple[str, str, str]]]:
    """``text`` with every marked figure recomputed, and the list of ``(spec, old, new)`` that changed."""
    changed: list[tuple[str, str, str]] = []

    def replace(match: re.Match[str]) -> str:
        spec, old = match["spec"], match["text"]
        new = figure_text(spec, repo)
        if new != old:
            changed.append((spec, old, new))
        return f"<!-- figure {spec} -->{new}<!-- /figure -->"

    return FIGURE.sub(replace, text), changed


def main(args: Args) -> int:
    stale = 0
    for page in pages():
        text, changed = fill(page.read_text(), REPO)
        for spec, old, new in changed:
            print(f"{page.relative_to(REPO)}: {old!r} -> {new!r} ({spec})")
        stale += len(changed)
        if changed and not args.check:
            page.write_text(text)
    if args.check and stale:
        print(f"doc_figures: {stale} figure(s) disagree with their JSON; run python experiments/doc_figures.py")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main, tyro.cli(Args, description=plain_text(__doc__))))
