"""docs/reference/ names exactly what the code has: seg_node's and seg_eval_node's parameters, every launch
argument of launch/*.launch.py, every `carla-seg` subcommand (and every `bench` sub-benchmark) and every option of
its argparse parser.

The reference format this reads (easy to extend by hand):
* a table whose header's first cell is `parameter`, `argument` or `option` lists names in its first column, as a
  code span (`backend`, `role_name`, `--lr LR`: the first word counts);
* seg_node's parameters are in docs/reference/seg_node.md, seg_eval_node's in seg_eval_node.md;
* launch arguments are in docs/reference/launch.md, one `## <file>.launch.py` section per launch file;
* options are in docs/reference/cli.md, one `## carla-seg <command>` section per command (`## carla-seg bench
  <benchmark>` per benchmark).
The options are read from the parsers themselves: each command's ``main`` is called through the `carla-seg`
dispatcher with ``ArgumentParser.parse_args`` replaced by a capture, so the test follows the command names, not
the module paths behind them.
"""
from __future__ import annotations

import argparse
import ast
import importlib
import re
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
REFERENCE = REPO / "docs" / "reference"
sys.path.insert(0, str(REPO / "test" / "ros"))
from launch_ast import calls, parse  # noqa: E402


# ---------------------------------------------------------------- the reference's Markdown

def sections(path: Path) -> dict[str, list[str]]:
    """`## heading` (backticks dropped) -> its lines; the lines before the first `##` go under ''."""
    out, current = {"": []}, ""
    for line in path.read_text().splitlines():
        m = re.match(r"^##\s+(.*?)\s*$", line)
        if m and not line.startswith("###"):
            current = m.group(1).replace("`", "").strip()
            if current in out:
                raise AssertionError(f"{path.name}: section {current!r} appears twice")
            out[current] = []
        else:
            out[current].append(line)
    return out


def _cells(line: str) -> list[str]:
    """A table row's cells; `\\|` is a `|` inside a cell (GitHub's escape)."""
    return [c.strip() for c in re.split(r"(?<!\\)\|", line.strip().strip("|"))]


def table_names(lines: list[str], kind: str) -> list[str]:
    """First-column names of every table in ``lines`` whose header's first cell is ``kind``."""
    names, in_table, wanted, width = [], False, False, 0
    for line in lines:
        if not line.lstrip().startswith("|"):
            in_table = False
            continue
        cells = _cells(line)
        if not in_table:
            in_table, wanted, width = True, cells[0].lower() == kind, len(cells)
            continue
        if not wanted or set(cells[0]) <= set("-: "):
            continue
        assert len(cells) == width, f"{len(cells)} cells where the header has {width} (an unescaped |?): {line!r}"
        m = re.match(r"`([^`]+)`", cells[0])
        assert m, f"a {kind} row must start with a code span: {line!r}"
        names.append(m.group(1).split()[0])
    return names


def _compare(in_code, in_docs: list[str], what: str):
    duplicates = sorted({n for n in in_docs if in_docs.count(n) > 1})
    missing = sorted(set(in_code) - set(in_docs))
    unknown = sorted(set(in_docs) - set(in_code))
    assert not (missing or unknown or duplicates), (
        f"{what}: in the code but not in the reference: {missing}; in the reference but not in the code: "
        f"{unknown}; listed twice: {duplicates}")


# ---------------------------------------------------------------- nodes

def _compare_parameters(table, doc: Path):
    """A node's parameter table, and use_sim_time (declared by rclpy in every node), against its page."""
    _compare([p.name for p in table] + ["use_sim_time"], table_names(doc.read_text().splitlines(), "parameter"),
             doc.name)


def test_seg_node_parameters_are_the_reference_ones():
    from carla_seg_ros.ros.seg_params import PARAMETERS
    _compare_parameters(PARAMETERS, REFERENCE / "seg_node.md")


def test_seg_eval_node_parameters_are_the_reference_ones():
    from carla_seg_ros.ros.seg_eval_node import PARAMETERS
    _compare_parameters(PARAMETERS, REFERENCE / "seg_eval_node.md")


# ---------------------------------------------------------------- launch files

def _resolve_imported(tree: ast.Module, name: str):
    """The object a launch file imports under ``name`` (`from carla_seg_ros... import ARGUMENTS`)."""
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            for alias in node.names:
                if (alias.asname or alias.name) == name:
                    return getattr(importlib.import_module(node.module), alias.name)
    raise AssertionError(f"cannot tell where {name} comes from")


def launch_arguments(path: Path) -> list[str]:
    """Names of the DeclareLaunchArgument calls: string constants, or the first field of each row of a table the
    file imports and loops over (`for name, default, description in ARGUMENTS`)."""
    tree, names = parse(path), []
    comprehensions = [n for n in ast.walk(tree) if isinstance(n, (ast.ListComp, ast.GeneratorExp))]
    for call in calls(tree, "DeclareLaunchArgument"):
        first = call.args[0] if call.args else next(k.value for k in call.keywords if k.arg == "name")
        if isinstance(first, ast.Constant):
            names.append(first.value)
            continue
        loop = next(g for c in comprehensions if c.elt is call for g in c.generators)
        targets = [t.id for t in getattr(loop.target, "elts", [loop.target])]
        assert isinstance(loop.iter, ast.Name), f"{path.name}: launch arguments from an unreadable expression"
        index = targets.index(first.id)
        names += [row[index] for row in _resolve_imported(tree, loop.iter.id)]
    return names


LAUNCH_FILES = sorted((REPO / "launch").glob("*.launch.py"))


@pytest.mark.parametrize("launch_file", LAUNCH_FILES, ids=lambda p: p.name)
def test_launch_arguments_are_the_reference_ones(launch_file):
    code = launch_arguments(launch_file)
    assert code, f"{launch_file.name} declares no launch argument"
    doc = sections(REFERENCE / "launch.md")
    assert launch_file.name in doc, f"docs/reference/launch.md has no `## {launch_file.name}` section"
    _compare(code, table_names(doc[launch_file.name], "argument"), f"launch.md, {launch_file.name}")


def test_launch_reference_has_no_stale_launch_file():
    documented = {s for s in sections(REFERENCE / "launch.md") if s.endswith(".launch.py")}
    assert documented == {p.name for p in LAUNCH_FILES}


# ---------------------------------------------------------------- carla-seg

class _Captured(Exception):
    def __init__(self, parser):
        super().__init__(parser.prog)
        self.parser = parser


def parser_of(argv: list[str]) -> argparse.ArgumentParser:
    """The parser `carla-seg ARGV --help` builds, caught when it starts parsing (parse_args and parse_known_args
    both go through parse_known_args), before the command does anything. `--help` makes a command that parses
    some other way print its help and exit instead of running."""
    from carla_seg_ros import cli

    def capture(self, args=None, namespace=None):
        raise _Captured(self)

    original = argparse.ArgumentParser.parse_known_args
    argparse.ArgumentParser.parse_known_args = capture
    try:
        cli.main(argv + ["--help"])
    except _Captured as caught:
        return caught.parser
    except SystemExit:
        pass
    finally:
        argparse.ArgumentParser.parse_known_args = original
    raise AssertionError(f"carla-seg {' '.join(argv)} parsed no arguments with argparse")


def option_names(parser: argparse.ArgumentParser) -> list[str]:
    """Its options by their first long name (`--freeze-bn` for `--freeze-bn/--no-freeze-bn`; a short name only
    when there is no long one) and its positionals by their metavar or destination. Options hidden from --help
    (argparse.SUPPRESS: a benchmark's own child-process switches) are internal and stay out of the reference."""
    names = []
    for action in parser._actions:
        if isinstance(action, argparse._HelpAction) or action.help == argparse.SUPPRESS:
            continue
        if action.option_strings:
            names.append(next((s for s in action.option_strings if s.startswith("--")), action.option_strings[0]))
        else:
            metavar = action.metavar if isinstance(action.metavar, str) else None
            names.append(metavar or action.dest.upper())
    return names


def commands() -> list[list[str]]:
    """Every command line that has a parser: `carla-seg NAME`, and `carla-seg bench BENCHMARK` for each benchmark
    of the bench dispatcher (its TARGETS table)."""
    from carla_seg_ros import cli
    out = []
    for name, (module, _) in cli.COMMANDS.items():
        if name == "bench":
            out += [[name, bench] for bench in importlib.import_module(module).TARGETS]
        else:
            out.append([name])
    return out


COMMAND_LINES = commands()


def test_every_command_has_a_section_and_no_section_is_stale():
    documented = {s for s in sections(REFERENCE / "cli.md") if s.startswith("carla-seg ")}
    expected = {"carla-seg " + " ".join(argv) for argv in COMMAND_LINES}
    _compare(expected, sorted(documented), "cli.md sections")


@pytest.mark.parametrize("argv", COMMAND_LINES, ids=" ".join)
def test_command_options_are_the_reference_ones(argv):
    section = "carla-seg " + " ".join(argv)
    doc = sections(REFERENCE / "cli.md")
    assert section in doc, f"docs/reference/cli.md has no `## {section}` section"
    _compare(option_names(parser_of(argv)), table_names(doc[section], "option"), f"cli.md, {section}")


def test_the_checks_can_fail():
    """The readers see a missing and an unknown name (a reference that lists nothing would otherwise pass)."""
    lines = ["| option | default | what |", "|---|---|---|", "| `--data DIR` | | x |", "| `--old` | | y |",
             "", "| topic | type |", "|---|---|", "| `~/mask` | Image |"]
    assert table_names(lines, "option") == ["--data", "--old"]
    assert table_names(lines, "parameter") == []
    with pytest.raises(AssertionError, match=r"not in the reference: \['--new'\].*not in the code: \['--old'\]"):
        _compare(["--data", "--new"], table_names(lines, "option"), "example")
    assert "--split" in option_names(parser_of(["evaluate"]))
