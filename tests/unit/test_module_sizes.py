"""No module of the package grows past ~400 lines without saying why at its top.

A long module is sometimes right (one actor's state is one object), but it should be
a decision someone wrote down, not drift: the reason goes in the module's docstring,
in a paragraph starting "Longer than 400 lines:".
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent.parent / "supervisor"
LIMIT = 400
REASON = "Longer than 400 lines:"


def test_every_long_module_says_why_it_is_long() -> None:
    unexplained = []
    for module in sorted(PACKAGE.rglob("*.py")):
        text = module.read_text()
        lines = text.count("\n")
        if lines <= LIMIT:
            continue
        docstring = ast.get_docstring(ast.parse(text)) or ""
        if REASON not in docstring:
            unexplained.append(f"{module.relative_to(PACKAGE.parent)} ({lines} lines)")
    assert not unexplained, (
        f"modules over {LIMIT} lines with no {REASON!r} paragraph in their docstring: "
        + ", ".join(unexplained)
    )
