"""The house rules a reader relies on: no import circles between the project's modules, and one
results folder."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("envs", "agents", "experiments")


def project_imports(path: Path) -> set[str]:
    """The project modules ``path`` imports (at any depth of the file, lazily or not; relative
    imports resolved against its package)."""
    found = set()
    package = path.parent.name
    for node in ast.walk(ast.parse(path.read_text())):
        names = [alias.name for alias in node.names] if isinstance(node, ast.Import) else []
        if isinstance(node, ast.ImportFrom) and node.module:
            names = [node.module if node.level == 0 else f"{package}.{node.module}"]
        found.update(name for name in names if name.split(".")[0] in PACKAGES)
    return found


def test_no_import_circles():
    graph = {
        ".".join(path.relative_to(ROOT).with_suffix("").parts): project_imports(path)
        for package in PACKAGES
        for path in (ROOT / package).glob("*.py")
        if path.name != "__init__.py"
    }
    graph = {module: {m for m in imports if m in graph} for module, imports in graph.items()}
    done: set[str] = set()

    def visit(module: str, trail: list[str]) -> None:
        if module in trail:
            raise AssertionError("import circle: " + " -> ".join([*trail[trail.index(module) :], module]))
        if module in done:
            return
        for imported in sorted(graph[module]):
            visit(imported, [*trail, module])
        done.add(module)

    for module in sorted(graph):
        visit(module, [])
    assert "agents.checkpoint" in graph and not graph["agents.checkpoint"] & {
        m for m in graph if m.startswith("agents.")
    }


def test_one_results_folder():
    folders = {p.relative_to(ROOT).as_posix() for p in ROOT.rglob("results") if p.is_dir() and ".venv" not in p.parts}
    assert folders == {"experiments/results"}


def test_the_makefile_installs_the_torch_that_pyproject_pins():
    """make venv's CPU-only torch step asks for the same versions as the package's requirement."""
    import re

    root = Path(__file__).resolve().parents[1]
    requirement = re.search(r'^\s*"(torch[<>=!,.0-9]*)",', (root / "pyproject.toml").read_text(), re.MULTILINE).group(1)
    spec = re.search(r"^TORCH_SPEC := (.+)$", (root / "Makefile").read_text(), re.MULTILINE).group(1)
    assert spec == requirement


def test_the_run_module_is_imported_as_run_and_only_by_scripts_and_tests():
    """train/run.py (the run plumbing of the training scripts) is imported as ``run``, the name a script
    run as ``python train/x.py`` finds it by, and never as ``train.run``: one copy per process, so one
    set of owned output folders. envs/ and agents/ import nothing of train/, neither this module nor a
    script (they sit below train/, which holds the run plumbing)."""
    train = {"train"} | {path.stem for path in (ROOT / "train").glob("*.py")}
    for folder in ("envs", "agents", "experiments", "benchmarks", "train", "tests"):
        for path in (ROOT / folder).glob("*.py"):
            tree = ast.parse(path.read_text())
            names = {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
            names |= {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.level == 0}
            assert "train.run" not in names, f"{path.name} imports train.run; import it as run"
            if folder in ("envs", "agents"):
                above = sorted(name for name in names if name.split(".")[0] in train)
                assert not above, f"{folder}/{path.name} imports {above} of train/"
