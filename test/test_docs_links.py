"""Every relative link and #anchor in the repository's Markdown points at something that exists.

Links are `[text](target)`, `![alt](target)` and `[label]: target` outside code blocks and code spans; web and mail
links are not fetched. A target is a path relative to the file (a file or a folder), optionally with `#anchor`;
an anchor must be one GitHub makes for a heading of the target Markdown file (lower case, punctuation dropped except
`-` and `_`, each space a `-`, `-1`, `-2`... for repeats) or an explicit `<a id=...>` / `<a name=...>`.
"""
from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
FENCE = re.compile(r"^\s*(```|~~~)")
INLINE_LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\]]*\])*\]\(\s*<?([^)\s>]*)>?(?:\s+\"[^\"]*\")?\s*\)")
REFERENCE_LINK = re.compile(r"^\s{0,3}\[[^\]]+\]:\s*<?(\S+?)>?(?:\s+.*)?$")
HTML_ANCHOR = re.compile(r"<a\s+(?:id|name)=[\"']([^\"']+)[\"']", re.IGNORECASE)
EXTERNAL = re.compile(r"^[a-z][a-z0-9+.-]*:", re.IGNORECASE)     # http:, https:, mailto:, ...


def markdown_files() -> list[Path]:
    """The tracked and untracked-but-not-ignored Markdown files (what a clone or the next commit holds)."""
    try:
        out = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard", "*.md"], cwd=REPO,
                             capture_output=True, text=True, check=True).stdout.split()
        files = [REPO / p for p in out]
    except (OSError, subprocess.CalledProcessError):       # not a git checkout (an sdist): every .md file
        files = [p for p in REPO.rglob("*.md") if ".venv" not in p.parts and ".git" not in p.parts]
    return sorted(p for p in files if p.is_file())


def prose_lines(text: str):
    """(line number, line) outside fenced code blocks, with code spans blanked out."""
    fenced = False
    for number, line in enumerate(text.splitlines(), 1):
        if FENCE.match(line):
            fenced = not fenced
            continue
        if not fenced:
            yield number, re.sub(r"(`+)(?:(?!\1).)+?\1", "``", line)


def slug(heading: str) -> str:
    """GitHub's anchor for a heading's text."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)        # a link's text stays, its target goes
    text = re.sub(r"<[^>]+>", "", text).strip().lower()
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def anchors(path: Path) -> set[str]:
    found, seen = set(), {}
    fenced = False
    for line in path.read_text(encoding="utf-8").splitlines():
        if FENCE.match(line):
            fenced = not fenced
            continue
        if fenced:
            continue
        found.update(HTML_ANCHOR.findall(line))
        m = re.match(r"^\s{0,3}#{1,6}\s+(.*?)\s*#*\s*$", line)
        if m:
            base = slug(m.group(1))
            n = seen.get(base, 0)
            seen[base] = n + 1
            found.add(base if n == 0 else f"{base}-{n}")
    return found


def links(path: Path):
    for number, line in prose_lines(path.read_text(encoding="utf-8")):
        for target in INLINE_LINK.findall(line):
            yield number, target
        m = REFERENCE_LINK.match(line)
        if m:
            yield number, m.group(1)


def broken_links(path: Path) -> list[str]:
    problems = []
    for number, target in links(path):
        if not target or EXTERNAL.match(target):
            continue
        file_part, _, anchor = target.partition("#")
        dest = (path.parent / file_part).resolve() if file_part else path
        where = f"{path.relative_to(REPO)}:{number}: {target}"
        if not dest.exists():
            problems.append(f"{where}: no such file")
        elif anchor and dest.suffix == ".md" and anchor not in anchors(dest):
            problems.append(f"{where}: no heading or anchor #{anchor} in {dest.relative_to(REPO)}")
        elif REPO not in dest.parents and dest != REPO:
            problems.append(f"{where}: points outside the repository")
    return problems


FILES = markdown_files()


def test_there_is_markdown_to_check():
    assert REPO / "README.md" in FILES and len(FILES) > 5


@pytest.mark.parametrize("path", FILES, ids=lambda p: str(p.relative_to(REPO)))
def test_relative_links_and_anchors_resolve(path):
    problems = broken_links(path)
    assert not problems, "\n".join(problems)


def test_the_checker_finds_a_broken_file_and_a_broken_anchor(tmp_path, monkeypatch):
    monkeypatch.setattr(f"{__name__}.REPO", tmp_path)
    (tmp_path / "a.md").write_text("# Top: `seg_node` (the node)\n## Top: `seg_node` (the node)\n<a id=\"x\"></a>\n"
                                   "```\n# not a heading\n[in code](missing.md)\n```\n")
    doc = tmp_path / "b.md"
    doc.write_text("[ok](a.md#top-seg_node-the-node) [ok](a.md#top-seg_node-the-node-1) [ok](a.md#x) "
                   "[ok](#local) `[code](gone.md)` [web](https://example.com/x.md)\n## Local\n"
                   "[bad](gone.md) [bad](a.md#not-a-heading) ![bad](img/none.png)\n[ref]: a.md#nothing\n")
    assert [p.split(": ", 1)[1] for p in broken_links(doc)] == [
        "gone.md: no such file", "a.md#not-a-heading: no heading or anchor #not-a-heading in a.md",
        "img/none.png: no such file", "a.md#nothing: no heading or anchor #nothing in a.md"]
    assert broken_links(tmp_path / "a.md") == []
