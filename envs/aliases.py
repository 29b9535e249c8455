"""One copy of this package per process, whichever of its two names is imported.

The install maps this folder to two names: ``envs`` and ``mnist_glimpse`` (the name that a project
with an ``envs`` package of its own can still import). Imported under both, Python would load every
module twice (two caches, two ``PerceptionCore`` classes, ``isinstance`` failing across them).
:func:`alias_package` makes the second name an alias: ``sys.modules`` maps it, and every
``<alias>.<module>``, to the module objects already loaded under the first name.

``mnist_glimpse`` names this package and nothing else, so it always becomes an alias of ``envs``.
``envs`` becomes an alias of ``mnist_glimpse`` only where the ``envs`` that Python would import is
this package too (its ``__init__.py`` has the same bytes): a project's own ``envs`` stays its own.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import sys
from pathlib import Path
from types import ModuleType

#: The two names the install gives this folder.
NAMES = ("envs", "mnist_glimpse")


class _AliasLoader(importlib.abc.Loader):
    """Loads ``<alias>.<module>`` as the module already imported (or imported now) as ``<name>.<module>``."""

    def __init__(self, real: str) -> None:
        self.real = real

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType:
        return importlib.import_module(self.real)

    def exec_module(self, module: ModuleType) -> None:
        """Nothing to run: the module ran once, under its own name."""


class _AliasFinder(importlib.abc.MetaPathFinder):
    """Finds ``<alias>.<module>`` as ``<name>.<module>`` (first on ``sys.meta_path``)."""

    def __init__(self, alias: str, name: str) -> None:
        self.alias, self.name = alias, name

    def find_spec(
        self, fullname: str, path: object = None, target: object = None
    ) -> importlib.machinery.ModuleSpec | None:
        if not fullname.startswith(self.alias + "."):
            return None
        return importlib.util.spec_from_loader(fullname, _AliasLoader(self.name + fullname[len(self.alias) :]))


def _is_this_package(name: str, init_file: str) -> bool:
    """Whether importing ``name`` would load a package whose ``__init__.py`` has ``init_file``'s bytes."""
    try:  # every finder on sys.meta_path (an editable install's among them); a top-level name imports nothing
        spec = importlib.util.find_spec(name)
    except (ImportError, ValueError):
        return False
    if spec is None or spec.origin is None or not spec.origin.endswith("__init__.py"):
        return False
    try:
        return Path(spec.origin).read_bytes() == Path(init_file).read_bytes()
    except OSError:
        return False


def alias_package(package: ModuleType) -> None:
    """Make the other of :data:`NAMES` an alias of ``package`` (this folder imported as ``package.__name__``),
    unless a module of that name is already loaded or (for ``envs``) it is another package."""
    name = package.__name__
    if name not in NAMES:
        return
    alias = NAMES[1 - NAMES.index(name)]
    if alias in sys.modules:
        return
    if alias == "envs" and not _is_this_package(alias, package.__file__):
        return
    sys.modules[alias] = package
    for module_name, module in list(sys.modules.items()):  # submodules loaded so far (this one among them)
        if module_name.startswith(name + "."):
            sys.modules.setdefault(alias + module_name[len(name) :], module)
    sys.meta_path.insert(0, _AliasFinder(alias, name))
