"""MkDocs hook: the CLI reference page, rendered at build time from the typer app itself.

docs/reference/cli.md holds an introduction and the marker line below; `on_page_markdown` replaces the
marker with `render()`: every command and subcommand in the order `speechcls --help` lists them, its
usage line, its help text, and a table per help panel of its arguments and options (names, type,
default, help). Nothing is copied by hand, so the page cannot drift from `--help`.

The walk uses typer's click command object (`typer.main.get_command(app)`: `.commands`, `.params`,
`list_commands`, `collect_usage_pieces`), never the standalone `click` package: typer 0.29 carries its
own click, and click is not a dependency of speechcls.
"""

from __future__ import annotations

import html
import inspect
import re
from enum import Enum

MARKER = "<!-- speechcls-cli-reference -->"
PAGE = "reference/cli.md"
DEFAULT_PANEL = "Options"  # typer's name for options without a rich_help_panel


def _command(app=None):
    import typer

    if app is None:
        from speechcls.cli import app
    return typer.main.get_command(app)


def _context(command, name: str, parent=None):
    import typer

    return typer.Context(command, info_name=name, parent=parent)


# --- text --------------------------------------------------------------------------------------------
_CODE = re.compile(r"(`[^`]*`)")
_DEFAULT_IN_HELP = re.compile(r"\s*\[default: ((?:[^\[\]]|\[[^\[\]]*\])*)\]\s*$")


def _plain(text: str | None) -> str:
    """Help text as the terminal shows it: rich's escaped `\\[` becomes `[`."""
    return (text or "").replace("\\[", "[").strip()


def _inline(text: str, table: bool = False) -> str:
    """Markdown-safe text: backtick spans kept as code, elsewhere HTML and markdown characters escaped
    (`<run>` would otherwise vanish as an HTML tag, `_silence_` turn italic, `[tb]` read as a link); in a
    table cell `|` is escaped and line breaks become spaces."""
    parts = []
    for i, piece in enumerate(_CODE.split(text)):
        if i % 2:  # a code span: markdown leaves its contents alone
            parts.append(piece)
            continue
        piece = html.escape(piece, quote=False)
        piece = re.sub(r"([\\*_\[\]#|])", r"\\\1", piece)
        parts.append(piece)
    out = "".join(parts)
    return " ".join(out.split()) if table else out


def _paragraphs(text: str) -> str:
    """A command's help: paragraphs as markdown; click's `\\b` (no rewrap) paragraphs as a text block."""
    out = []
    for para in _plain(text).split("\n\n"):
        if para.lstrip().startswith("\b"):
            out.append("```text\n" + para.replace("\b", "").strip("\n") + "\n```")
        else:
            out.append(_inline(para))
    return "\n\n".join(out)


# --- one parameter ------------------------------------------------------------------------------------
def _names(param) -> str:
    if param.param_type_name == "argument":
        return f"`{param.metavar or param.name}`"  # as the usage line spells it
    return ", ".join(f"`{opt}`" for opt in [*param.opts, *param.secondary_opts])


def _type(param, ctx) -> str:
    if getattr(param, "is_flag", False) and not getattr(param, "count", False):
        return "flag"
    label = param.display_type(ctx).removeprefix("<").removesuffix(">").removesuffix(" range")
    limits = ((">=", getattr(param, "min", None)), ("<=", getattr(param, "max", None)))
    bounds = [f"{op} {v}" for op, v in limits if v is not None]
    if bounds:
        label += f" ({', '.join(bounds)})"
    if (param.nargs != 1 or getattr(param, "multiple", False)) and not label.startswith("list["):
        label = f"list[{label}]"
    return f"`{label}`"


def _default(param, ctx) -> tuple[str, str]:
    """(default as shown, help without a `[default: ...]` written into it)."""
    help_text = _plain(getattr(param, "help", None))
    written = _DEFAULT_IN_HELP.search(help_text)
    if written:  # a default the command describes itself (computed at run time, or per --recipe)
        return _inline(written[1], table=True), help_text[: written.start()]
    show = getattr(param, "show_default", True)
    if isinstance(show, str):
        return _inline(show, table=True), help_text
    if param.required:
        return "required", help_text
    value = param.get_default(ctx, call=False)
    if value is None or value == "" or show is False or value == () or value == []:
        return "", help_text  # none, or one that depends on other options (the help says which)
    if getattr(param, "is_bool_flag", False):
        if param.secondary_opts:  # --x / --no-x: the spelling that is the default
            return f"`{param.opts[0] if value else param.secondary_opts[0]}`", help_text
        return ("on" if value else "off"), help_text
    if inspect.isfunction(value):
        return "(computed)", help_text
    if isinstance(value, Enum):
        value = value.value
    if isinstance(value, (list, tuple)):
        value = ", ".join(str(v.value if isinstance(v, Enum) else v) for v in value)
    return f"`{value}`", help_text


def _row(param, ctx) -> str:
    default, help_text = _default(param, ctx)
    cells = [_names(param), _type(param, ctx), default, _inline(help_text, table=True)]
    return "| " + " | ".join(cells) + " |"


def _tables(command, ctx) -> list[str]:
    """One table per help panel, in typer's order: Arguments, Options, then the named panels."""
    panels: dict[str, list] = {}
    for param in command.params:
        if getattr(param, "hidden", False):
            continue
        default_panel = "Arguments" if param.param_type_name == "argument" else DEFAULT_PANEL
        panels.setdefault(getattr(param, "rich_help_panel", None) or default_panel, []).append(param)
    order = sorted(panels, key=lambda p: {"Arguments": 0, DEFAULT_PANEL: 1}.get(p, 2))  # stable: named as met
    out = []
    for panel in order:
        out += [f"**{_inline(panel)}**", "", "| Name | Type | Default | Description |", "|---|---|---|---|"]
        out += [_row(param, ctx) for param in panels[panel]]
        out.append("")
    return out


# --- the page -----------------------------------------------------------------------------------------
def _section(command, ctx, level: int, sub_level: int) -> list[str]:
    path = ctx.command_path
    usage = " ".join([path, *command.collect_usage_pieces(ctx)])
    out = [f"{'#' * level} {path}", "", "```text", usage, "```", ""]
    if command.help:
        out += [_paragraphs(command.help), ""]
    if command.epilog:
        out += [_paragraphs(command.epilog), ""]
    out += _tables(command, ctx)
    for name in getattr(command, "list_commands", lambda ctx: [])(ctx):
        sub = command.get_command(ctx, name)
        if sub is None or getattr(sub, "hidden", False):
            continue
        out += _section(sub, _context(sub, name, parent=ctx), sub_level, min(sub_level + 1, 6))
    return out


def render(app=None, prog: str = "speechcls") -> str:
    """The markdown of every command of `app` (speechcls's own by default), from its click command object."""
    command = _command(app)
    # the program and its commands at level 2 (one entry each in the page's contents), subcommands below
    return "\n".join(_section(command, _context(command, prog), 2, 2)).rstrip() + "\n"


def on_page_markdown(markdown: str, page, config, files, **kwargs) -> str:
    if page.file.src_uri != PAGE:
        return markdown
    if MARKER not in markdown:  # the page lost its marker: fail the build rather than publish no reference
        raise ValueError(f"{PAGE} must hold the line {MARKER} (where the generated reference goes)")
    return markdown.replace(MARKER, render())
