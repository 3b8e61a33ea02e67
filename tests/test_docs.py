"""The docs site: the CLI reference is generated from the typer app (every command, every option), the
site builds under `mkdocs build --strict` (a broken link, a missing anchor or a page left out of the nav
fails it), and the plain-PyTorch example is a file that trains."""

import html
import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Annotated

import numpy as np
import pytest
import typer

from speechcls.cli import app

from helpers import write_wav

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "docs" / "examples" / "plain_pytorch.py"


def _renderer():
    spec = importlib.util.spec_from_file_location("cli_reference", REPO / "docs" / "hooks" / "cli_reference.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _commands(command, path=("speechcls",)):
    """(path, command) of every visible command and subcommand, walked on typer's click command object."""
    yield path, command
    for name, sub in sorted(getattr(command, "commands", {}).items()):
        if not sub.hidden:
            yield from _commands(sub, (*path, name))


def _section(page: str, path: tuple[str, ...]) -> str:
    """The part of the page under the heading of command `path`, up to the next command's heading."""
    found = re.search(rf"^#+ {re.escape(' '.join(path))}\n(.*?)(?=^#+ |\Z)", page, re.M | re.S)
    assert found, f"no section for {' '.join(path)}"
    return found[1]


def _row(section: str, opt: str) -> str:
    rows = [ln for ln in section.splitlines() if ln.startswith("| ") and f"`{opt}`" in ln.split(" | ")[0]]
    assert len(rows) == 1, (opt, rows)
    return rows[0]


def test_cli_reference_has_every_command_and_option():
    page = _renderer().render()
    commands = list(_commands(typer.main.get_command(app)))
    assert {"speechcls train", "speechcls data info", "speechcls plot curves", "speechcls bench"} <= {
        " ".join(p) for p, _ in commands
    }
    for path, command in commands:
        section = _section(page, path)
        for param in command.params:
            if param.hidden:
                continue
            for opt in [*param.opts, *param.secondary_opts] if param.param_type_name == "option" else []:
                _row(section, opt)


def test_cli_reference_lists_every_train_option_with_type_and_help():
    command = typer.main.get_command(app).commands["train"]
    section = _section(_renderer().render(), ("speechcls", "train"))
    options = [p for p in command.params if not p.hidden]
    assert len(options) > 40  # the recipe and augmentation panels included
    for param in options:
        for opt in [*param.opts, *param.secondary_opts]:
            row = _row(section, opt)
            cells = re.split(r"(?<!\\) \| ", row.strip("| "))  # an escaped pipe (`a \| b`) stays in its cell
            assert len(cells) == 4, row
            assert cells[1] == "flag" if param.is_flag else re.fullmatch(r"`[\w\[\]().,<>=\s-]+`", cells[1]), row
            first_word = re.match(r"[\w.-]+", (param.help or "").replace("\\[", "[").lstrip("`"))
            assert first_word is None or first_word[0] in html.unescape(cells[3].replace("\\", "")), row
    for panel in ("Options", "Recipe (defaults: per --recipe)", "Augmentation of the training split"):
        assert f"**{panel}" in section


def test_the_renderer_reads_types_defaults_and_nested_groups():
    """A toy app the renderer has never seen: what it prints comes from the command object."""
    toy = typer.Typer()
    group = typer.Typer(help="A group.")
    toy.add_typer(group, name="grp")

    @toy.command()
    def go(
        src: Annotated[Path, typer.Argument(help="Where from.")],
        n: Annotated[int, typer.Option(min=1, help="How many.")] = 3,
        fast: Annotated[bool, typer.Option("--fast/--slow", help="Speed.")] = False,
        out: Annotated[str, typer.Option(help="Written to <out>_x. \\[default: next to SRC]")] = "",
        gone: Annotated[int, typer.Option(hidden=True)] = 0,
    ):
        """Go somewhere."""

    @group.command()
    def deep():
        """Deep down."""

    page = _renderer().render(toy, prog="toy")
    go_section = _section(page, ("toy", "go"))
    assert "toy go [OPTIONS] {src}" in go_section and "Go somewhere." in go_section
    assert "| `src` | `path` | required | Where from. |" in go_section
    assert "| `--n` | `int (>= 1)` | `3` | How many. |" in go_section
    assert "| `--fast`, `--slow` | flag | `--slow` | Speed. |" in go_section
    # a default the help writes itself goes to the default column; `<out>` and `_` are escaped, not HTML
    assert "| `--out` | `str` | next to SRC | Written to &lt;out&gt;\\_x. |" in go_section
    assert "--gone" not in page
    assert re.search(r"^### toy grp deep$", page, re.M) and "Deep down." in _section(page, ("toy", "grp", "deep"))


def _mkdocs():
    for module in ("mkdocs", "material", "mkdocstrings", "mkdocstrings_handlers.python"):
        pytest.importorskip(module, reason="the docs extra is not installed: pip install -e '.[docs]'")


def _build(config: Path, site: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "-f", str(config), "--site-dir", str(site)],
        cwd=REPO, capture_output=True, text=True, timeout=300,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},  # no banner about Material's successor
    )  # fmt: skip


def test_site_builds_strict_with_the_generated_pages(tmp_path):
    _mkdocs()
    r = _build(REPO / "mkdocs.yml", tmp_path / "site")
    assert r.returncode == 0, r.stderr
    cli = (tmp_path / "site" / "reference" / "cli" / "index.html").read_text()
    for param in typer.main.get_command(app).commands["train"].params:
        for opt in [*param.opts, *param.secondary_opts]:
            assert f"<code>{opt}</code>" in cli, opt
    api = (tmp_path / "site" / "reference" / "api" / "index.html").read_text()
    for name in ("speechcls.store.open_store", "speechcls.loader.FeatureLoader", "speechcls.models.build_model",
                 "speechcls.engine.checkpoint.load_model", "speechcls.config.TrainConfig.max_lr"):  # fmt: skip
        assert f'id="{name}"' in api, name
    assert "chosen by the chapter from its LR finder" in api  # a field's comment, shown as its docstring
    example = (tmp_path / "site" / "examples" / "plain-pytorch" / "index.html").read_text()
    assert "TinyCNN" in example and "validation accuracy" in example  # the tested file, included
    assert (tmp_path / "site" / "examples" / "plain_pytorch.py").read_bytes() == EXAMPLE.read_bytes()


@pytest.mark.parametrize(
    "page, problem",
    [
        ("See [there](missing.md).", "missing.md"),  # a link to no page
        ("See [there](#no-such-heading).", "no-such-heading"),  # a link to no anchor
        (None, "orphan.md"),  # a page left out of the nav
    ],
    ids=["broken-link", "broken-anchor", "orphan"],
)
def test_the_strict_build_fails_on(tmp_path, page, problem):
    """The site's own validation settings (inherited from mkdocs.yml) turn each into a failed build."""
    _mkdocs()
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "index.md").write_text(f"# Home\n\n{page or 'Fine.'}\n")
    if page is None:
        (docs / "orphan.md").write_text("# Not in the nav\n")
    config = tmp_path / "mkdocs.yml"
    config.write_text(
        f"INHERIT: {REPO / 'mkdocs.yml'}\ndocs_dir: {docs}\nnav:\n  - Home: index.md\nhooks: []\nplugins: [search]\n"
    )
    r = _build(config, tmp_path / "site")
    assert r.returncode != 0 and problem in r.stderr, r.stderr


BANDS = {"low": (200, 400), "mid": (900, 1300), "high": (3000, 4500)}  # Hz of each class's tone


def _tone_tree(root: Path, speakers: int = 20) -> Path:
    """A learnable tree: each class a tone burst in its own band (random pitch, level, start, length) in
    noise; speakers 14-16 are the validation split, 17-19 the test split."""
    rng = np.random.default_rng(0)
    lists = {"validation": [], "testing": []}
    t = np.arange(16_000) / 16_000
    for word, (low, high) in BANDS.items():
        for s in range(speakers):
            n = int(rng.uniform(0.3, 0.6) * 16_000)
            start = int(rng.integers(0, 16_000 - n))
            wave = rng.normal(0, 0.02, 16_000)
            wave[start : start + n] += rng.uniform(0.1, 0.8) * np.sin(2 * np.pi * rng.uniform(low, high) * t[:n])
            rel = f"{word}/s{s:02d}_nohash_0.wav"
            write_wav(root / rel, wave.astype(np.float32), 16_000, "PCM_16")
            if s >= 14:
                lists["validation" if s < 17 else "testing"].append(rel)
    for name, rels in lists.items():
        (root / f"{name}_list.txt").write_text("\n".join(rels) + "\n")
    return root


@pytest.mark.slow
def test_plain_pytorch_example_trains(tmp_path):
    from speechcls.config import FeatureParams
    from speechcls.featurize import featurize

    tree = _tone_tree(tmp_path / "tree")
    store = featurize(FeatureParams("mel", n_mels=40, hop_length=400), tree, out=tmp_path / "mel.zarr",
                      backend="torch", device="cpu").store  # fmt: skip
    r = subprocess.run(
        [sys.executable, str(EXAMPLE), str(store), "--epochs", "6", "--batch-size", "16", "--device", "cpu"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    losses = [float(x) for x in re.findall(r"^epoch \d+: train loss ([\d.]+)", r.stdout, re.M)]
    assert len(losses) == 6, r.stdout
    assert losses[-1] < 0.5 * losses[0], r.stdout  # it learns: the loss falls
    final = re.search(r"^validation accuracy ([\d.]+) \(chance ([\d.]+)\)$", r.stdout, re.M)
    assert final and float(final[2]) == pytest.approx(1 / 3, abs=1e-3), r.stdout
    assert float(final[1]) >= 0.8, r.stdout  # 9 validation clips, chance 0.33
