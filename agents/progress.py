"""What the training scripts print while they run: progress bars that say why they stop, and lines
that stay in a log.

A stage that a wall-clock budget (or early stopping) ends before its planned steps leaves its bar
complete, not stuck at some percentage with a long estimate: :func:`end_stage` takes the steps it
will not run off the bar, writes the reason on it, and prints one line that stays when the bar is
redrawn or the output goes to a file. :func:`say` prints a line above any live bar, flushed at once.
"""

from __future__ import annotations

import sys

from tqdm import tqdm


def say(line: str) -> None:
    """Print ``line`` to stdout now, above any live progress bar, flushed (a redirected log shows it at once).

    :param line: one line of text.
    """
    tqdm.write(line, file=sys.stdout)
    sys.stdout.flush()


def end_stage(progress: tqdm, stage: str, reason: str, done: int, planned: int) -> str:
    """A stage of ``progress`` ended after ``done`` of its ``planned`` steps: the steps it will not run
    come off the bar's total (which then ends at 100%), ``reason`` goes on the bar, and the line
    ``"<stage>: <reason> at step <done>/<planned>"`` is printed (:func:`say`).

    :param progress: the bar the stage counts its steps on (possibly shared with later stages).
    :param stage: what ended, e.g. ``"core pretraining"``.
    :param reason: why, e.g. ``"budget of 168 s reached"``.
    :param done: the steps the stage ran.
    :param planned: the steps it planned.
    :return: the printed line.
    """
    if progress.total is not None:
        progress.total = max(progress.n, progress.total - max(planned - done, 0))
    progress.set_postfix_str(reason, refresh=False)
    progress.refresh()
    line = f"{stage}: {reason} at step {done:,}/{planned:,}"
    say(line)
    return line
