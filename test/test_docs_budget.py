"""The documentation's size budgets: what a newcomer reads first stays short, and history stays in its place.

README.md <= 8 KB with `make demo` and `make test` on its first screen, the model card <= 10 KB, at most two dates
in the two together (dated runs belong to docs/history/ and CHANGELOG.md), and all Markdown outside docs/history/
and CHANGELOG.md <= 130 KB.
"""
from __future__ import annotations

import re
from pathlib import Path

from test_docs_links import markdown_files

REPO = Path(__file__).resolve().parent.parent
FIRST_SCREEN_LINES = 25
COMMANDS = ("make demo    # sets up .venv with everything, then runs seg_node on the CARLA frames over ROS 2 and "
            "writes out/demo/",
            "make test    # sets up .venv with everything, then runs the whole test suite")
DATE = re.compile(r"\b(?:19|20)\d\d(?:-\d\d-\d\d)?\b")


def test_readme_is_short_and_starts_with_the_two_commands():
    text = (REPO / "README.md").read_text(encoding="utf-8")
    assert len(text.encode()) <= 8192
    first_screen = text.splitlines()[:FIRST_SCREEN_LINES]
    for command in COMMANDS:
        assert command in first_screen, f"README's first {FIRST_SCREEN_LINES} lines lack: {command}"


def test_model_card_is_short():
    assert len((REPO / "models" / "README.md").read_bytes()) <= 10240


def test_at_most_two_dates_in_readme_and_card():
    dates = [d for p in ("README.md", "models/README.md") for d in DATE.findall((REPO / p).read_text())]
    assert len(dates) <= 2, f"dates in README.md and models/README.md: {dates} (dated runs go to docs/history/)"


def test_user_markdown_within_130_kb():
    history = REPO / "docs" / "history"
    user = [p for p in markdown_files() if history not in p.parents and p != REPO / "CHANGELOG.md"]
    sizes = {str(p.relative_to(REPO)): p.stat().st_size for p in user}
    assert sum(sizes.values()) <= 130 * 1024, sorted(sizes.items(), key=lambda kv: -kv[1])[:5]


def test_the_date_pattern_counts_dates_and_not_numbers():
    assert DATE.findall("on 2026-12-03 and in 2018; 2048x1024, 0.9.16, 1,338 frames, port 2000") == [
        "2026-12-03", "2018", "2000"]
