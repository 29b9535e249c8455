"""The one entry point of the scripts in ``train/`` and ``experiments/``: a user's mistake is one line.

A mistake a user makes with a script (an ``--out`` that is a file or cannot be written, a folder another
run owns, ``--resume`` with nothing saved, a finished run reused without ``--overwrite``, a damaged
checkpoint) raises :class:`UserError` with a message that names the problem and the fix. Every script
ends with ``run_main(main, tyro.cli(Args))``, which prints that message on one line to stderr and
exits with status 2; anything else is a bug and keeps its traceback. An interrupted run exits with
status 130.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any, NoReturn, TypeVar

T = TypeVar("T")

#: The exit status of a run stopped by a user's mistake (as argparse and tyro exit on a bad flag).
USER_ERROR_STATUS = 2
#: The exit status of a run stopped by SIGINT or SIGTERM (128 + SIGINT, as a shell reports Ctrl-C).
INTERRUPTED_STATUS = 130


class UserError(Exception):
    """A user's mistake, with a message that names the problem and the fix; :func:`run_main` prints it
    on one line and exits with status 2. The subclasses below are also the built-in type a library
    caller catches (``ValueError``, ``FileExistsError``, ...)."""


class UserValueError(UserError, ValueError):
    """A value or a file's contents that cannot be used."""


class UserFileExistsError(UserError, FileExistsError):
    """A folder that holds a run the command would replace, or that another run owns."""


class UserFileNotFoundError(UserError, FileNotFoundError):
    """A file the command needs is not there."""


class UserOSError(UserError, OSError):
    """A path that cannot be created or written."""


@contextmanager
def user_errors(*types: type[Exception]) -> Iterator[None]:
    """Within the block, an exception of ``types`` is the user's mistake: it is raised again as a
    :class:`UserError` with the same message. Wrap only calls whose errors of those types are all about
    the user's input (e.g. reading a file named by a flag).

    :param types: the exception types to convert, e.g. ``ValueError, FileNotFoundError``.
    """
    try:
        yield
    except UserError:
        raise
    except types as error:
        kind = {ValueError: UserValueError, FileNotFoundError: UserFileNotFoundError}.get(type(error), UserError)
        raise kind(str(error)) from error


def one_line(message: str) -> str:
    """``message`` with its line breaks and runs of spaces folded into single spaces."""
    return " ".join(message.split())


def plain_text(docstring: str | None) -> str:
    """A docstring as a script's ``--help`` shows it: Sphinx markup dropped, the words kept.

    A role such as ``:class:`~envs.sb3.MnistGlimpseSB3VecEnv``` becomes ``MnistGlimpseSB3VecEnv`` (with
    ``~``: the last part of the path; without: the path; ``:role:`text <target>```: the text), a
    double-backquoted literal its text, and a ``::`` that opens a code block ``:``.

    :param docstring: a module's ``__doc__`` (``None`` gives ``""``).
    """
    text = re.sub(r":[a-z]+(?::[a-z]+)?:`([^`]+)`", lambda match: _role_text(match.group(1)), docstring or "")
    text = re.sub(r"``(.+?)``", r"\1", text, flags=re.S)
    return re.sub(r"::$", ":", text, flags=re.M)


def _role_text(target: str) -> str:
    """What a Sphinx role's ``target`` reads as in plain text."""
    if target.endswith(">") and "<" in target:
        return target[: target.index("<")].strip()
    return target[1:].rsplit(".", 1)[-1] if target.startswith("~") else target


def run_main(main: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """Call ``main(*args, **kwargs)`` as a script's entry point and return its result.

    A :class:`UserError` prints ``error: <message>`` on one line to stderr and exits with status 2;
    an interruption (SIGINT/SIGTERM, Ctrl-C) exits with status 130; any other exception is a bug and
    propagates with its traceback.
    """
    try:
        return main(*args, **kwargs)
    except UserError as error:
        _exit(f"error: {one_line(str(error))}", USER_ERROR_STATUS)
    except KeyboardInterrupt as error:  # the resume point (train/run.py) has said what it saved
        if type(error) is KeyboardInterrupt:
            print("interrupted", file=sys.stderr)
        _exit(None, INTERRUPTED_STATUS)


#: Where the names of the flags, and the names they replaced, are listed.
NAMES_DOC = "docs/runs.md#names"


def check_retired(argv: Sequence[str], retired: Mapping[str, str]) -> None:
    """Refuse a retired flag in ``argv``, naming the flag that replaced it.

    :param argv: a command line without the program name.
    :param retired: retired flag -> its replacement, e.g. ``{"--glimpses": "--max-glimpses"}``; a flag
        matches with ``_`` or ``-`` between its words and with ``=VALUE`` attached.
    :raises UserValueError: ``argv`` holds a retired flag (before a ``--`` that ends the flags).
    """
    for word in argv:
        if word == "--":
            return
        name = word.split("=", 1)[0].replace("_", "-")
        if word.startswith("--") and name in retired:
            raise UserValueError(f"{name} is retired: pass {retired[name]} instead (the names: {NAMES_DOC}).")


def refuse_retired(retired: Mapping[str, str], argv: Sequence[str] | None = None) -> list[str]:
    """The command line, for the script's parser to read next, after :func:`check_retired`: a retired
    flag ends the script with status 2 and one line naming its replacement (:func:`run_main`),
    where the parser would only call it unknown.

    :param retired: retired flag -> its replacement.
    :param argv: the command line without the program name (default: ``sys.argv[1:]``).
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    run_main(check_retired, argv, retired)
    return argv


def _exit(message: str | None, status: int) -> NoReturn:
    sys.stdout.flush()
    if message is not None:
        print(message, file=sys.stderr, flush=True)
    sys.exit(status)


def parse_preset_args(
    args_class: type[T],
    presets: dict[str, tuple[str, dict[str, Any]]],
    default: str,
    docstring: str | None,
    argv: list[str] | None = None,
) -> T:
    """A script's flags when ``--preset NAME`` picks their defaults and the other flags change them.

    :param args_class: the script's ``Args`` dataclass; its ``preset`` field records the preset's name.
    :param presets: name -> (one line shown in ``--help``, the values the preset sets).
    :param default: the preset used without ``--preset``.
    :param docstring: the script's docstring, shown in ``--help`` as :func:`plain_text`.
    :param argv: the command line without the program name (default: ``sys.argv[1:]``).
    """
    import argparse
    import dataclasses

    import tyro

    first = argparse.ArgumentParser(add_help=False)
    first.add_argument("--preset", default=default, choices=list(presets))
    known, rest = first.parse_known_args(sys.argv[1:] if argv is None else argv)
    width = max(map(len, presets)) + 2
    listing = "\n".join(f"  {name:<{width}} {text}" for name, (text, _) in presets.items())
    description = f"{plain_text(docstring)}\npresets (--preset NAME; this help shows {known.preset!r}):\n{listing}"
    defaults = dataclasses.replace(args_class(), preset=known.preset, **presets[known.preset][1])
    return tyro.cli(args_class, default=defaults, args=rest, description=description)
