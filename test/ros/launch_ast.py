"""Reading launch files without the `launch` packages (not installable here): their syntax tree, calls, keywords."""
from __future__ import annotations

import ast
from pathlib import Path


def parse(path: Path) -> ast.Module:
    return ast.parse(path.read_text(), filename=str(path))


def calls(tree: ast.AST, name: str) -> list[ast.Call]:
    """Every call of ``name`` (a plain name or an attribute) in the tree."""
    return [n for n in ast.walk(tree) if isinstance(n, ast.Call)
            and (getattr(n.func, "id", None) == name or getattr(n.func, "attr", None) == name)]


def keyword(call: ast.Call, name: str):
    """The value node of keyword argument ``name``, or None."""
    return next((k.value for k in call.keywords if k.arg == name), None)
