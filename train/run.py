"""The run plumbing every training script in ``train/`` shares, so that each script reads top to bottom.

A script declares its flags as a dataclass that inherits the common ones (:class:`RunArgs`, and
:class:`ResumableArgs` for a script that can stop and continue), refuses the flags it retired with the
names that replaced them (:func:`agents.cli.refuse_retired`, docs/runs.md, Names), calls :func:`start` (seeds, torch
threads, device), owns its output folder (:func:`claim_output`, :class:`ResumePoint`), names once what
a resumed run needs back (:meth:`ResumePoint.keep`), prints its progress (:func:`say`,
:func:`end_stage`) and ends with :func:`write_metrics` and :func:`summary`. Policies, learning rules and
the evaluation of an agent stay in ``agents/``; this module only runs them.

The scripts run as ``python train/x.py`` from the repository root, so their own folder is first on
``sys.path`` and they import this module as ``run``; the tests import it by the same name (pytest's
``pythonpath`` holds ``train``), so one process holds one copy of it (one set of owned folders).

* Output folders: one live run per folder, ``OUT/.lock``, held by the run that writes there
  (:func:`lock_output`): a second run into the same folder is refused with the folder and the
  owner's process id. The lock is an ``flock`` on the file, which holds the owner's pid: the
  operating system releases it when the owner's process ends, however it ends, so a crashed run
  never leaves a stuck folder behind (the file stays, unlocked). Windows has no ``flock``: there the
  folder is created but not locked.
* Stopping and continuing, ``OUT/resume.pt``: a script wraps its run, from its training loop to its
  last write, in a :class:`ResumePoint`. At each step boundary it calls :meth:`ResumePoint.step`;
  everything an uninterrupted run would still hold there (weights, optimizers, environment state,
  counters, named once with :meth:`ResumePoint.keep`) is written atomically every ``save_every``
  seconds, and when SIGINT or SIGTERM arrives, after which :class:`Interrupted` is raised (the scripts
  exit with status 130). When training is over, :meth:`ResumePoint.final` saves the trained state
  before the final evaluation, the writes and the figure, and from then on a signal stops the run at
  once; :meth:`ResumePoint.finish` writes the file that marks the run finished (``metrics.json``) and
  removes ``resume.pt`` as one step that no signal splits. So a signal at any point after training
  started leaves a finished run or a resumable one. The same command with ``--resume`` then restarts
  from the file, with the Python, NumPy and torch generators as they were, and reaches the result an
  uninterrupted run reaches (the tests compare final weights and metrics). The file carries a digest
  of its contents (:mod:`envs.digest`), checked by ``--resume``. Each run also gets a ``run_id``, kept
  across ``--resume``, that the scripts write into both its checkpoint and its ``metrics.json``;
  :func:`agents.checkpoint.load_agent` refuses a pair from different runs.
* Progress: a stage that a wall-clock budget (or early stopping) ends before its planned steps leaves
  its bar complete, not stuck at some percentage with a long estimate: :func:`end_stage` takes the
  steps it will not run off the bar, writes the reason on it, and prints one line that stays when the
  bar is redrawn or the output goes to a file. :func:`say` prints a line above any live bar.
* Results: ``metrics.json`` (:func:`write_metrics`, the schema every agent writes), test accuracy
  reported after 1, 2, 5, 10, 25 glimpses and ``T`` (:func:`accuracy_table`), accuracy curves along
  training (:func:`curve_point` at :func:`curve_milestones`) and the table a script ends with
  (:func:`summary`). Reported accuracies use the ``nearest`` read-out: each glimpse reads one real pixel.
"""

from __future__ import annotations

import json
import os
import random
import signal
import sys
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import torch
from tqdm import tqdm

from agents.cli import UserFileExistsError, UserOSError, UserValueError
from envs.atomic import write_atomic
from envs.config import resolve_device
from envs.digest import check_digest, with_digest

try:
    import fcntl
except ImportError:  # Windows: no flock
    fcntl = None  # type: ignore[assignment]

T = TypeVar("T")


# The common flags -------------------------------------------------------------------------------


@dataclass
class RunArgs:
    """The flags every training script has; a script's ``Args`` inherits them (and sets its own ``out``)."""

    seed: int = 0
    """seed of python, numpy and torch"""
    device: str = "auto"
    """cpu, cuda or auto"""
    torch_threads: int = 1
    """CPU threads for torch (0 = torch's default, one per core); 1, the default, does not collapse when
    other jobs share a small CPU (docs/studies/env-throughput.md)"""
    out: str = "runs/run"
    """output folder"""
    overwrite: bool = False
    """replace a finished run in --out (its metrics.json); without it such a folder is refused"""


@dataclass
class ResumableArgs(RunArgs):
    """The flags of a script that can stop and continue (:class:`ResumePoint`)."""

    overwrite: bool = False
    """replace a finished or interrupted run in --out; without it such a folder is refused"""
    resume: bool = False
    """continue the interrupted run in --out (its resume.pt) to the result an uninterrupted run gives"""
    save_every: float = 300.0
    """seconds between saves of OUT/resume.pt during training (also written on SIGINT/SIGTERM)"""


def start(args: RunArgs, deterministic: bool = False) -> torch.device:
    """Seed Python, NumPy and torch with ``args.seed``, give torch ``args.torch_threads`` CPU threads
    (0: torch's default) and return the device ``args.device`` names (:func:`envs.config.resolve_device`).

    :param deterministic: also make cuDNN pick deterministic kernels (CUDA only).
    """
    random.seed(args.seed)
    np.random.seed(args.seed)
    torch.manual_seed(args.seed)
    if args.torch_threads > 0:
        torch.set_num_threads(args.torch_threads)
    if deterministic:
        torch.backends.cudnn.deterministic = True
    return resolve_device(args.device)


# Output folders ---------------------------------------------------------------------------------

#: The lock file's name inside an output folder.
LOCK_NAME = ".lock"

#: Folders this process owns (resolved path -> the open lock file's descriptor): taking one twice is a no-op.
_HELD: dict[Path, int] = {}


def lock_output(out: str | os.PathLike) -> Path:
    """Create ``out`` if needed and make this process its one owner, until :func:`release_output` or
    the end of the process. Taking a folder this process already owns does nothing.

    :param out: the run's output folder.
    :return: ``out`` as a :class:`~pathlib.Path`.
    :raises UserFileExistsError: ``out`` is a file, or another live run owns it (its pid is named).
    :raises UserOSError: ``out`` cannot be created or written.
    """
    out = Path(out)
    key = out.resolve()
    if key in _HELD:
        return out
    if out.exists() and not out.is_dir():
        raise UserFileExistsError(f"--out {out} is a file, not a folder; pass a folder (new, or a run's) as --out.")
    try:
        out.mkdir(parents=True, exist_ok=True)
        descriptor = os.open(out / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as error:
        raise UserOSError(
            f"cannot write to --out {out} ({error.strerror or error}); pass a folder you can write to as --out."
        ) from None
    if fcntl is not None:
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            owner = os.pread(descriptor, 32, 0).decode(errors="replace").strip() or "unknown"
            os.close(descriptor)
            raise UserFileExistsError(
                f"{out} is in use by another run (process {owner}): two runs in one folder would overwrite "
                "each other's files. Wait for that run to end (or stop it), or pass another --out."
            ) from None
        except OSError as error:  # a file system without locks
            os.close(descriptor)
            raise UserOSError(
                f"cannot lock --out {out} ({error.strerror or error}): a run needs a folder only it writes to; "
                "pass a folder on a local disk as --out."
            ) from None
    os.ftruncate(descriptor, 0)
    os.pwrite(descriptor, f"{os.getpid()}\n".encode(), 0)
    _HELD[key] = descriptor
    return out


def release_output(out: str | os.PathLike) -> None:
    """Give up this process's ownership of ``out`` (nothing if it does not own it)."""
    descriptor = _HELD.pop(Path(out).resolve(), None)
    if descriptor is not None:
        os.close(descriptor)  # closing the file releases the flock


def claim_output(out: str | os.PathLike, overwrite: bool) -> Path:
    """The output folder of a run, created and owned by this process (:func:`lock_output`:
    a second live run into it is refused). A folder that holds a finished run (``metrics.json``) is
    refused unless ``overwrite``; then its ``metrics.json`` goes first, so that a run that fails
    leaves no finished-looking mix of old and new files. Call it before any work.

    :raises UserError: ``out`` is a file, cannot be written, is owned by another run, or holds a
        finished run and ``overwrite`` is not set.
    """
    out = Path(out)
    metrics = out / "metrics.json"
    for owned in (False, True):  # refused before anything changes, and again once the folder is ours
        if metrics.is_file() and not overwrite:
            raise UserFileExistsError(
                f"{out} holds a finished run ({metrics}); pass --overwrite to replace it "
                "(make train ARGS=--overwrite), or another --out."
            )
        if not owned:
            lock_output(out)
    metrics.unlink(missing_ok=True)
    return out


def log_folder(out: str | os.PathLike) -> Path:
    """A TensorBoard folder of this run's own, ``OUT/tb/<start time>-<pid>``: a rerun or a killed run
    in the same ``OUT`` never mixes its curves with this one's."""
    return Path(out) / "tb" / f"{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}"


# Stopping and continuing ----------------------------------------------------------------------


#: Arguments that may differ between an interrupted run and its ``--resume``: they change how the run
#: is carried out, not its result.
RESUME_FREE = ("resume", "overwrite", "save_every", "max_train_seconds", "torch_threads", "device", "progress_bar")


class Interrupted(KeyboardInterrupt):
    """Training stopped on SIGINT/SIGTERM after saving ``OUT/resume.pt``."""


def random_state() -> dict[str, Any]:
    """The global generators of Python, NumPy and torch (CPU and CUDA)."""
    numpy_state = np.random.get_state(legacy=False)
    return {
        "python": random.getstate(),
        "numpy": {
            **numpy_state,
            "state": {
                "key": torch.from_numpy(numpy_state["state"]["key"].astype(np.int64)),
                "pos": numpy_state["state"]["pos"],
            },
        },
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def set_random_state(state: dict[str, Any]) -> None:
    """Restore :func:`random_state`'s output."""
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    numpy_state = dict(state["numpy"])
    numpy_state["state"] = {
        "key": state["numpy"]["state"]["key"].numpy().astype(np.uint32),
        "pos": state["numpy"]["state"]["pos"],
    }
    np.random.set_state(numpy_state)
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


class ResumePoint:
    """The resume file of one run in ``out``; a context manager that catches SIGINT and SIGTERM.

    Built before any work: it refuses an interrupted run in ``out`` unless ``resume`` or ``overwrite``
    is set, and with ``resume`` it loads the file and refuses it if the run was started with other
    arguments (those outside :data:`RESUME_FREE`). The script then names, once, what its run holds
    (:meth:`keep`); :meth:`step` and :meth:`final` save that.

    :param out: the run's output folder.
    :param args: the script's arguments (a dataclass with ``resume``, ``overwrite`` and ``save_every``).
    :param stop_after: act as if interrupted at that step (tests of ``--resume``).
    :ivar state: what the interrupted run saved (``None`` for a fresh run).
    :ivar run_id: this run's id, the interrupted run's when resuming.
    :ivar trained: the interrupted run had finished training (:meth:`final`): only its evaluation and
        writes are left.
    """

    def __init__(self, out: str | Path, args: Any, stop_after: int | None = None) -> None:
        self.out = Path(out)
        self.path = self.out / "resume.pt"
        self.args = vars(args)
        self.save_every = float(args.save_every)
        self.stop_after = stop_after
        self.state: dict[str, Any] | None = None
        for owned in (False, True):  # refused before anything changes, and again once the folder is ours
            if args.resume and not self.path.is_file():
                raise UserValueError(
                    f"--resume: {self.path} not found; {out} holds no interrupted run (drop --resume)."
                )
            if self.path.is_file() and not args.resume and not args.overwrite:
                raise UserFileExistsError(
                    f"{out} holds an interrupted run ({self.path}): pass --resume to continue it "
                    "(make train ARGS=--resume), or --overwrite to start again (make train ARGS=--overwrite)."
                )
            if not owned:
                lock_output(out)  # a second live run into the folder is refused here
        if args.overwrite and not args.resume:
            self.path.unlink(missing_ok=True)
        if args.resume:
            self.state = self._load()
        self.run_id = self.state["run_id"] if self.state else uuid.uuid4().hex[:16]
        self.trained = bool(self.state and self.state["run"].get("trained", False))
        self._kept: dict[str, Any] = {}
        self._signals: list[int] = []
        self._handlers: dict[int, Any] = {}
        self._last_save = time.time()
        self._final = False  # training is over: a signal stops the run at once
        self._committing = False  # finish() is writing: a signal waits until it is done

    def _load(self) -> dict[str, Any]:
        try:
            state = torch.load(self.path, map_location="cpu", weights_only=True)
            missing = [key for key in ("args", "run_id", "step", "random", "run") if key not in state]
            if missing:
                raise KeyError(f"no {missing}")
            saved = state["args"]
        except Exception as error:  # a damaged file: torch raises many types
            raise UserValueError(
                f"--resume: {self.path} is damaged ({type(error).__name__}: {error}); start again with --overwrite."
            ) from None
        try:
            check_digest(state, str(self.path))
        except ValueError as error:
            raise UserValueError(f"--resume: {error} Or start again with --overwrite.") from None
        changed = sorted(k for k, v in self.args.items() if k not in RESUME_FREE and saved.get(k) != v)
        if changed:
            raise UserValueError(
                f"--resume: the run in {self.path.parent} was started with other values of {changed} "
                f"({', '.join(f'{k}={saved.get(k)!r}' for k in changed)}); pass those, or start again with --overwrite."
            )
        return state

    def restore(self) -> dict[str, Any] | None:
        """The saved run's own state (the ``run`` entry), after restoring the global generators;
        ``None`` for a fresh run."""
        if self.state is None:
            return None
        set_random_state(self.state["random"])
        print(f"resuming {self.path.parent} at step {self.state['step']}", flush=True)
        return self.state["run"]

    def keep(self, **kept: Any) -> dict[str, Any] | None:
        """Name, once, everything an uninterrupted run holds at a step boundary: what :meth:`step` and
        :meth:`final` save (under these names, as the ``run`` entry), and what a resumed run gets back.

        A value is an object with ``state_dict`` and ``load_state_dict`` (a network, an optimizer, a
        batch stream: saved by its state and loaded back into it), a ``dict`` or ``list`` (saved as a
        copy and restored into it), a pair of functions ``(get, put)`` (``get()`` is saved, ``put`` is
        called with it), or a function of no arguments (its result is saved; the caller takes it back
        from the returned mapping). They are restored in the order given.

        :return: for a resumed run, everything it saved (these names, and what :meth:`final` added),
            after the global generators and the objects above are restored; ``None`` for a fresh run.
        """
        self._kept = kept
        saved = self.restore()
        for name, value in kept.items():
            if saved is None or name not in saved:
                continue
            if hasattr(value, "load_state_dict"):
                value.load_state_dict(saved[name])
            elif isinstance(value, tuple):
                value[1](saved[name])
            elif isinstance(value, dict):
                value.update(saved[name])
            elif isinstance(value, list):
                value[:] = saved[name]
        return saved

    def kept_state(self) -> dict[str, Any]:
        """What :meth:`keep` named, as it is now: the ``run`` entry of ``resume.pt``."""

        def state(value: Any) -> Any:
            if hasattr(value, "state_dict"):
                return value.state_dict()
            if isinstance(value, (dict, list)):
                return type(value)(value)
            return value[0]() if isinstance(value, tuple) else value()

        return {name: state(value) for name, value in self._kept.items()}

    def save(self, step: int, run: dict[str, Any]) -> None:
        """Write ``OUT/resume.pt`` atomically: ``run`` plus the arguments, the step and the generators."""
        state = {"args": self.args, "run_id": self.run_id, "step": step, "random": random_state(), "run": run}
        state = with_digest(state)
        write_atomic(self.path, lambda handle: torch.save(state, handle))
        self._last_save = time.time()

    def step(self, step: int) -> None:
        """Call at a step boundary (``step`` steps done). Saves the kept state (:meth:`keep`) when
        ``save_every`` seconds have passed; on a caught signal (or at ``stop_after``) saves it and raises
        :class:`Interrupted`."""
        if self._signals or (self.stop_after is not None and step >= self.stop_after):
            self.save(step, self.kept_state())
            self._stop()
        if time.time() - self._last_save > self.save_every:
            self.save(step, self.kept_state())

    def final(self, step: int, **extra: Any) -> None:
        """Call when training is over, inside the ``with`` block, before the final evaluation and the
        writes: saves the kept state with ``trained`` and ``extra`` (so that ``--resume`` goes straight
        to the evaluation; a restored run skips its training loop, :attr:`trained`), and from then on a
        signal stops the run at once, raising :class:`Interrupted` wherever it arrives.

        :param step: the steps done (all of them).
        :param extra: what the evaluation needs besides the kept state (e.g. ``train_seconds``).
        """
        self.save(step, {**self.kept_state(), "trained": True, **extra})
        self._final = True
        if self._signals:
            self._stop()

    def finish(self, commit: Callable[[], T] | None = None) -> T | None:
        """The run is written: call ``commit`` (the write that marks the run finished, e.g. its
        ``metrics.json``), remove ``resume.pt`` and give up the folder; a signal meanwhile waits until
        all three are done, then raises :class:`Interrupted` with the run finished.

        :return: what ``commit`` returned.
        """
        self._committing = True
        try:
            result = commit() if commit is not None else None
            self.path.unlink(missing_ok=True)
            release_output(self.out)
        finally:
            self._committing = False
        if self._signals and self._handlers:
            print(f"interrupted after the run was written: {self.out} holds the finished run", flush=True)
            raise Interrupted
        return result

    def _stop(self) -> None:
        print(f"interrupted: saved {self.path}; continue with the same command and --resume", flush=True)
        raise Interrupted

    def _on_signal(self, signum: int, _frame: Any) -> None:
        self._signals.append(signum)
        if self._final and not self._committing:  # the trained state is saved: stop here
            self._final = False  # one Interrupted, even if signals follow while it unwinds
            self._stop()

    def __enter__(self) -> ResumePoint:
        self._handlers = {s: signal.signal(s, self._on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
        return self

    def __exit__(self, *exc: object) -> None:  # also when a step raises: the caller's handlers come back
        for s, handler in self._handlers.items():
            signal.signal(s, handler)
        self._handlers = {}
        self._final = False


# Progress ---------------------------------------------------------------------------------------


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


# Checks of the RL scripts ------------------------------------------------------------------------


def check_rl_args(args: Any, default_perception_lr: float) -> None:
    """Refuse empty budgets and a perception learning rate that a frozen core would ignore.

    :param args: the script's ``Args`` (``num_envs``, ``total_steps``, ``eval_images``, ``max_glimpses``,
        ``learn_perception``, ``perception_lr``).
    :param default_perception_lr: the script's default ``perception_lr``.
    """
    for name in ("num_envs", "total_steps", "eval_images", "max_glimpses"):
        if getattr(args, name) < 1:
            raise UserValueError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}.")
    if not args.learn_perception and args.perception_lr != default_perception_lr:
        raise UserValueError(
            f"--perception-lr {args.perception_lr} trains the core; pass --learn-perception, or drop it."
        )


def core_training(args: Any) -> str:
    """``"joint"`` when the environment trains its core alongside the agent (``args.learn_perception``),
    else ``"frozen"``: the ``core_training`` entry of an RL run's ``metrics.json`` and its agent name's end."""
    return "joint" if args.learn_perception else "frozen"


def refuse_with_pixel_actions(args: Any, names: tuple[str, ...]) -> None:
    """With ``--action-type pixel``, refuse the Gaussian policy's options ``names`` set away from their
    defaults: nothing reads them there.

    :param args: the script's ``Args`` (``action_type`` and ``names``; its class gives the defaults).
    """
    if args.action_type != "pixel":
        return
    defaults = type(args)()
    for name in names:
        if getattr(args, name) != getattr(defaults, name):
            raise UserValueError(
                f"--{name.replace('_', '-')} is an option of the Gaussian policy (--action-type continuous); "
                "with --action-type pixel nothing reads it. Drop it."
            )


# Results ----------------------------------------------------------------------------------------

#: Glimpse budgets reported in ``metrics.json`` (those ``<= T``, plus ``T`` itself).
REPORTED_BUDGETS = (1, 2, 5, 10, 25)
#: Glimpse budgets of the accuracy curves along training (``metrics.json`` ``curve``).
CURVE_BUDGETS = ("5", "10", "25")


def curve_milestones(limit: int = 10**7) -> list[int]:
    """The optimizer steps at which a training script records its accuracy curve, log-spaced:
    ``[1, 2, 5, 10, 20, 50, ...]`` up to ``limit``."""
    return [m * 10**k for k in range(len(str(limit))) for m in (1, 2, 5) if m * 10**k <= limit]


def curve_point(step: int, seconds: float, accuracy: torch.Tensor) -> dict[str, Any]:
    """One point of an accuracy curve: ``{"step", "seconds", "accuracy": {"5": .., "10": .., "25": ..}}``
    (the :data:`CURVE_BUDGETS` up to ``T``) from an accuracy after each glimpse ``(T,)``."""
    table = accuracy_table(accuracy)
    return {"step": step, "seconds": round(seconds, 1), "accuracy": {b: table[b] for b in CURVE_BUDGETS if b in table}}


def accuracy_table(accuracy: torch.Tensor) -> dict[str, float]:
    """``{"1": acc, "2": acc, ...}`` for the reported budgets up to ``T`` and for ``T``."""
    glimpses = accuracy.shape[0]
    budgets = sorted({b for b in REPORTED_BUDGETS if b <= glimpses} | {glimpses})
    return {str(b): round(float(accuracy[b - 1]), 4) for b in budgets}


def write_metrics(
    path: str | os.PathLike,
    agent: str,
    accuracy: torch.Tensor,
    train_sampler: str,
    train_seconds: float,
    device: str,
    seed: int,
    **extra: Any,
) -> dict[str, Any]:
    """Write the shared ``metrics.json`` schema and return it.

    ``{"agent", "test_accuracy": {"1": .., "2": .., "5": .., "10": .., "25": .., "T": ..},
    "readout": "nearest", "train_sampler", "train_seconds", "device", "seed", **extra}``
    """
    metrics = {
        "agent": agent,
        "test_accuracy": accuracy_table(accuracy),
        "readout": "nearest",
        "train_sampler": train_sampler,
        "train_seconds": round(train_seconds, 1),
        "device": device,
        "seed": seed,
        **extra,
    }
    text = json.dumps(metrics, indent=2, allow_nan=False) + "\n"  # NaN is not JSON: refuse it here
    write_atomic(path, lambda handle: handle.write(text.encode()))
    return metrics


def accuracy_lines(title: str, table: dict[str, float]) -> list[str]:
    """``title``, then a table of test accuracy (%) by glimpses: what the scripts print.

    :param title: the first line (the agent and how it was evaluated).
    :param table: ``{"1": accuracy, "2": ..., "25": ...}`` (:func:`accuracy_table`), accuracies in ``[0, 1]``.
    """
    width = max(6, *(len(b) + 1 for b in table))
    return [
        title,
        "  glimpses " + "".join(f"{b:>{width}}" for b in table),
        "  accuracy " + "".join(f"{100 * v:>{width}.1f}" for v in table.values()),
    ]


def summary(metrics: dict[str, Any], out: str | os.PathLike, files: Sequence[str]) -> str:
    """What a training script ends with: its test accuracy by glimpses as a small table, and where its
    files went."""
    title = f"{metrics['agent']}, seed {metrics['seed']}: test accuracy (%), 10,000 test images, nearest read-out"
    lines = accuracy_lines(title, metrics["test_accuracy"])
    return "\n".join([*lines, f"wrote {', '.join(str(Path(out) / name) for name in files)}"])


def write_agent_run(
    resume: ResumePoint,
    out: Path,
    args: Any,
    agent: str,
    policy: torch.nn.Module,
    core: Any,
    accuracy: torch.Tensor,
    train_sampler: str,
    train_seconds: float,
    device: torch.device,
    checkpoint: dict[str, Any] | None = None,
    before_metrics: Callable[[], None] | None = None,
    **extra: Any,
) -> dict[str, Any]:
    """The files a trained agent's run ends with: ``OUT/checkpoint.pt`` (:func:`agents.checkpoint.save_agent`,
    with the arguments and the run's id), ``OUT/glimpses.png`` (its glimpse trails), then, last,
    ``OUT/metrics.json`` (:func:`write_metrics`), which marks the run finished (:meth:`ResumePoint.finish`).

    :param args: the script's arguments (``max_glimpses``, ``seed``; all of them go into the checkpoint).
    :param accuracy: the test accuracy after each glimpse ``(T,)``, nearest read-out.
    :param device: where the glimpse trails are drawn, and what metrics.json records.
    :param checkpoint: more entries of the checkpoint (before the run's id).
    :param before_metrics: called after the figure, before ``metrics.json`` (e.g. closing a log).
    :param extra: the script's own entries of ``metrics.json``.
    :return: the metrics written.
    """
    from agents.checkpoint import save_agent
    from agents.figures import plot_glimpse_trails

    path = out / "checkpoint.pt"
    save_agent(
        path, agent, policy, core, args.max_glimpses, args=vars(args), **(checkpoint or {}), run_id=resume.run_id
    )
    print(f"drawing glimpse trails to {out / 'glimpses.png'} ...", flush=True)
    plot_glimpse_trails(policy, core, args.max_glimpses, out / "glimpses.png", device=device)
    if before_metrics is not None:
        before_metrics()
    return resume.finish(  # metrics.json last: it marks the run finished
        lambda: write_metrics(
            out / "metrics.json", agent, accuracy, train_sampler, train_seconds, str(device), args.seed, **extra
        )
    )
