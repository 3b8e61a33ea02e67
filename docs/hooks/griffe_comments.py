"""Griffe extension (mkdocstrings' source reader): an attribute without a docstring takes its comments as
one, so the API pages show what each config field means.

speechcls documents a default where it is set, nanoGPT-style (`epochs: int = 50  # the maximum; ...`),
and a comment is not a docstring to Python or to griffe: without this, the config dataclasses' fields
would render as bare names. The comment lines right above a field (no blank line between, section rules
`# --- ... ---` left out) and the comments on its own lines become its docstring; pragmas (`# fmt: skip`,
`# noqa`, `# type:`) are left out.
"""

from __future__ import annotations

import ast
import io
import tokenize

import griffe

PRAGMAS = ("fmt:", "noqa", "type:", "pragma")


def _comment(line: str) -> str | None:
    text = line.strip()
    if not text.startswith("#"):
        return None
    text = text.lstrip("#").strip()
    return None if text.startswith("---") or text.startswith(PRAGMAS) else text


def _comments(lines: list[str], lineno: int, endlineno: int) -> list[str]:
    """The comments above line `lineno` (1-based) and within lines lineno..endlineno, in order."""
    above = []
    i = lineno - 2
    while i >= 0 and (text := _comment(lines[i])) is not None:
        above.insert(0, text)
        i -= 1
    own = []
    source = "\n".join(line.strip() for line in lines[lineno - 1 : endlineno]) + "\n"
    try:
        for token in tokenize.generate_tokens(io.StringIO(source).readline):
            if token.type == tokenize.COMMENT and (text := _comment(token.string)) is not None:
                own.append(text)
    except (tokenize.TokenError, SyntaxError):  # a statement cut oddly: its own comments are skipped
        pass
    return above + own


class CommentDocstrings(griffe.Extension):
    def __init__(self) -> None:
        super().__init__()
        self._agent, self._lines = None, []  # the visitor of the module being read, and its source lines

    def on_attribute_instance(self, *, node, attr, agent, **kwargs) -> None:
        code = getattr(agent, "code", None)  # the static visitor has the source; the inspector has none
        if attr.docstring is not None or code is None or attr.lineno is None:
            return
        if not isinstance(node, (ast.Assign, ast.AnnAssign)):  # a property's body comments are not about it
            return
        if agent is not self._agent:
            self._agent, self._lines = agent, code.splitlines()
        text = " ".join(_comments(self._lines, attr.lineno, attr.endlineno or attr.lineno))
        if text:
            attr.docstring = griffe.Docstring(text, lineno=attr.lineno, endlineno=attr.endlineno, parent=attr)
