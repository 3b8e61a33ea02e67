"""What every benchmark shares: the machine it ran on, timing with warm-up and repeats, result files."""

from __future__ import annotations

import json
import os
import platform
import shlex
import statistics
import sys
import time
from pathlib import Path
from typing import Callable

RESULTS = Path(__file__).resolve().parent / "results"
# --quick runs (one repeat, fewer steps) land here unless given --out: their numbers are smoke, not
# measurements, and must never overwrite the committed results/<name>-<machine> files (git-ignored)
QUICK_RESULTS = RESULTS / "quick"


def results_dir(out: Path | None, quick: bool) -> Path:
    """Where a run writes: --out if given, else results/quick/ for a quick run, else results/."""
    return Path(out) if out else QUICK_RESULTS if quick else RESULTS


def command_line() -> str:
    """This process's command as a shell line, to rerun it: `python benchmarks/featurize.py --quick ...`."""
    return shlex.join(["python", *sys.argv])


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def machine() -> dict:
    import torch

    from speechcls.runtime import package_versions

    info = {
        "cpus": os.cpu_count(),
        "cpu": cpu_model(),
        "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(),
    }
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    # the versions a store records, by the same function; torch's own string keeps its CUDA build tag
    return info | package_versions() | {"torch": torch.__version__}


def peer_workers(spec: str | None, quick: bool) -> list[int]:
    """The peer DataLoader's num_workers to time: --peer-workers "0,16", else 0 and the core count
    (just 0 with --quick)."""
    if spec:
        return [int(w) for w in spec.split(",")]
    return [0] if quick else sorted({0, os.cpu_count() or 1})


def machine_tag(info: dict) -> str:
    """Result files are named by machine: e.g. cpu2, or h100 where a GPU ran."""
    if "gpu" in info:
        name = info["gpu"].lower()
        for short in ("h200", "h100", "a100", "l4", "t4"):
            if short in name:
                return short
        return name.replace(" ", "-")
    return f"cpu{info['cpus']}"


def sync(device: str) -> None:
    if device.startswith("cuda"):
        import torch

        torch.cuda.synchronize()


def timed(fn: Callable[[], object], repeats: int = 3, warmup: int = 1, device: str = "cpu") -> dict:
    """Warm up, then time `repeats` calls (synchronized on CUDA): median, min, max seconds."""
    for _ in range(warmup):
        fn()
        sync(device)
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - t)
    return {"median_s": statistics.median(times), "min_s": min(times), "max_s": max(times), "repeats": repeats}


def write_results(
    name: str, info: dict, rows: list[dict], markdown: str, out_dir: Path | None = None, *, repeats: int, quick: bool
) -> Path:
    """<out_dir>/<name>-<machine>.json and .md (out_dir: `results_dir`), each naming the command that made
    it and its repeats, so a file always says whether it holds a full measurement or a quick smoke run."""
    out_dir = results_dir(out_dir, quick)
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = out_dir / f"{name}-{machine_tag(info)}"
    run = {"command": command_line(), "repeats": repeats, "quick": quick}
    stem.with_suffix(".json").write_text(json.dumps({"run": run, "machine": info, "results": rows}, indent=1) + "\n")
    kind = "quick run: smoke numbers, not a measurement" if quick else "full run"
    header = (
        f"# {name} on {machine_tag(info)}\n\n"
        f"made by `{run['command']}` ({kind}, {repeats} repeat{'s' if repeats != 1 else ''})\n\n"
        + ", ".join(f"{k}: {v}" for k, v in info.items())
        + "\n\n"
    )
    stem.with_suffix(".md").write_text(header + markdown + "\n")
    return stem


def md_table(rows: list[dict], columns: list[str]) -> str:
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for r in rows:
        lines.append("| " + " | ".join(_fmt(r.get(c, "")) for c in columns) + " |")
    return "\n".join(lines)


def _fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:,.0f}" if abs(v) >= 100 else f"{v:.3g}"
    return str(v)
