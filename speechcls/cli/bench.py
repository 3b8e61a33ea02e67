"""`speechcls bench`: runs the benchmark scripts of a source checkout (benchmarks/*.py) and prints a
short table of the ratios last. The scripts and the peer they measure against live in benchmarks/,
beside the package, not inside it: they are for measuring, not for import by users.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from speechcls.cli.app import OverwriteOpt, app, console, user_errors
from speechcls.runtime import check_out, check_out_dir, marked

SCRIPTS = {
    "featurize": "featurize.py",
    "input": "input_pipeline.py",
    "train": "train_step.py",
    "store": "store_codecs.py",
    "ranks": "stream_ranks.py",
}


# what every result file holds (benchmarks/common.py's write_results): how bench knows its own earlier results
_RESULT_MARKS = {".json": b'"results"', ".md": b"made by `"}


def benchmarks_dir() -> Path:
    here = Path(__file__).resolve().parents[2] / "benchmarks"  # speechcls/cli/bench.py -> the checkout
    if not (here / "common.py").is_file():
        raise ValueError(
            f"no benchmarks/ beside the speechcls package ({here}): `speechcls bench` runs from a source "
            "checkout (git clone, then pip install -e .)"
        )
    return here


def run(
    which: list[str],
    quick: bool = False,
    root: Path | None = None,
    out: Path | None = None,
    extra: list[str] = (),
    overwrite: bool = False,
) -> list[Path]:
    """Run each benchmark in a fresh process (timings are not disturbed by the others' threads and
    memory); returns the JSON result files written. Without `out`, a full run writes benchmarks/results/
    (the committed numbers) and a quick one benchmarks/results/quick/ (git-ignored), as the scripts do.
    Before any work, `out` is checked (runtime.check_out_dir) and so is every file a benchmark would
    replace there: only earlier results are, unless `overwrite`."""
    folder = benchmarks_dir()
    results = folder / "results"
    for name in which:
        if name not in SCRIPTS:
            raise ValueError(f"unknown benchmark {name!r}: choose {', '.join(SCRIPTS)} or all")
    if out is not None:
        check_out_dir(out, command="bench")
    out = Path(out) if out else results / "quick" if quick else results
    for name in which:  # <script>-<machine>.json and .md: the machine's name is the script's to make
        stem = Path(SCRIPTS[name]).stem
        for path, mark in ((p, _RESULT_MARKS[p.suffix]) for p in out.glob(f"{stem}-*") if p.suffix in _RESULT_MARKS):
            check_out(path, own=marked(mark), overwrite=overwrite, command="bench")
    written = []
    for name in which:
        cmd = [sys.executable, str(folder / SCRIPTS[name]), "--out", str(out), *extra]
        if quick:
            cmd.append("--quick")
        if root is not None and name != "store":
            cmd += ["--root", str(root)]
        before = {p: p.stat().st_mtime for p in out.glob("*.json")} if out.is_dir() else {}
        subprocess.run(cmd, check=True)
        written += [p for p in out.glob("*.json") if before.get(p) != p.stat().st_mtime]
    return written


def summary(files: list[Path]) -> list[tuple[str, str, str, str]]:
    """(benchmark, variant, way, the number that matters) for the short table."""
    rows = []
    for f in files:
        data = json.loads(f.read_text())
        name = f.stem.rsplit("-", 1)[0]
        for r in data["results"]:
            if "ratio_vs_peer" in r:
                rate = r.get("clips_per_s", r.get("samples_per_s"))
                rows.append((name, r["variant"], r["way"], f"{rate:,.0f}/s, x{r['ratio_vs_peer']:.2f} vs peer"))
            elif "input_overhead_pct" in r and r["way"].startswith("speechcls"):
                rows.append(
                    (
                        name,
                        r["variant"],
                        r["way"],
                        f"{r['samples_per_s']:,.1f}/s, input overhead {r['input_overhead_pct']:.1f} %",
                    )
                )
            elif name == "stream_ranks" and "speedup" in r:
                rows.append(
                    (
                        name,
                        r["variant"],
                        f"world {r['world']}, {r['ranks_read']}",
                        f"{r['chunks_per_rank']:.1f} chunks a rank, x{r['speedup']:.2f} vs every chunk",
                    )
                )
            elif name == "store_codecs" and r["codec"] == "blosc-lz4-5-bitshuffle":
                rows.append(
                    (name, f"{r['variant']} {r['dtype']}", f"chunk {r['chunk_rows']}", f"ratio {r['ratio']:.2f}")
                )
    return rows


@app.command()
@user_errors
def bench(
    which: Annotated[
        Optional[list[str]],
        typer.Argument(help="featurize | input | train | store | ranks | all. \\[default: all]", show_default=False),
    ] = None,
    quick: Annotated[bool, typer.Option(help="Bounded work: one repeat, few steps (what the tests run).")] = False,
    root: Annotated[
        Optional[Path], typer.Option(help="A Speech Commands tree. \\[default: a synthetic one]", show_default=False)
    ] = None,
    out: Annotated[
        Optional[Path],
        typer.Option(
            help="Results folder. \\[default: benchmarks/results; with --quick benchmarks/results/quick]",
            show_default=False,
        ),
    ] = None,
    overwrite: OverwriteOpt = False,
) -> None:
    """Benchmarks: the on-the-fly peer and speechcls side by side, ratios printed last."""
    from rich.table import Table

    names = list(SCRIPTS) if not which or "all" in which else which
    files = run(names, quick, root, out, overwrite=overwrite)
    table = Table(title="speechcls bench", title_justify="left")
    for col in ("benchmark", "variant", "way", "result"):
        table.add_column(col)
    for row in summary(files):
        table.add_row(*row)
    console().print(table)
