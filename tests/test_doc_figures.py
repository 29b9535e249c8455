"""experiments/doc_figures.py: the marked figures of README.md and docs/ come from their JSON."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import experiments.doc_figures as doc_figures
from agents.cli import UserError


def test_every_marked_figure_agrees_with_its_json():
    stale = []
    for page in doc_figures.pages():
        _, changed = doc_figures.fill(page.read_text())
        stale += [(page.name, *change) for change in changed]
    assert stale == [], "run python experiments/doc_figures.py"


def test_the_pages_carry_marked_figures():
    text = "".join(page.read_text() for page in doc_figures.pages())
    assert len(doc_figures.FIGURE.findall(text)) >= 8


def write(path: Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data))


def test_fill_gives_one_value_or_mean_and_std(tmp_path):
    for seed, value in enumerate((0.5, 0.6, 0.7)):
        write(tmp_path / "runs" / f"seed{seed}.json", {"test_accuracy": {"25": value}})
    write(tmp_path / "one.json", {"seconds": 12.34})
    text = (
        "a <!-- figure runs/seed*.json test_accuracy.25 -->old<!-- /figure -->% "
        "b <!-- figure one.json seconds scale=1 digits=0 -->12<!-- /figure --> s"
    )
    filled, changed = doc_figures.fill(text, tmp_path)
    assert "-->60.0 ± 10.0<!--" in filled and "-->12<!--" in filled
    assert changed == [("runs/seed*.json test_accuracy.25", "old", "60.0 ± 10.0")]


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("missing.json test_accuracy.25", "no file matches"),
        ("one.json test_accuracy.10", "no key"),
        ("one.json test_accuracy", "not a number"),
        ("one.json test_accuracy.25 colour=red", "unknown option"),
        ("one.json", "write '<!-- figure GLOB KEY"),
    ],
)
def test_bad_markers_name_the_problem(tmp_path, spec, message):
    write(tmp_path / "one.json", {"test_accuracy": {"25": 0.5}})
    with pytest.raises(UserError, match=message):
        doc_figures.fill(f"<!-- figure {spec} -->x<!-- /figure -->", tmp_path)


def test_check_changes_no_page(tmp_path, monkeypatch, capsys):
    write(tmp_path / "one.json", {"v": 0.5})
    page = tmp_path / "README.md"
    page.write_text("<!-- figure one.json v -->49.0<!-- /figure -->")
    (tmp_path / "docs").mkdir()
    monkeypatch.setattr(doc_figures, "REPO", tmp_path)
    monkeypatch.setattr(doc_figures, "pages", lambda: [page])
    assert doc_figures.main(doc_figures.Args(check=True)) == 1
    assert page.read_text() == "<!-- figure one.json v -->49.0<!-- /figure -->"
    assert "'49.0' -> '50.0'" in capsys.readouterr().out
    assert doc_figures.main(doc_figures.Args()) == 0
    assert page.read_text() == "<!-- figure one.json v -->50.0<!-- /figure -->"
