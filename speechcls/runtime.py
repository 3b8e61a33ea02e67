"""What every stage needs from the machine it runs on: the device, seeding, atomic file writes, the
package versions a store or run records, available memory. torch is imported inside the functions that
need it, so the CLI can import this module and still answer `--help` at once."""

from __future__ import annotations

import os
import random
import tempfile
from pathlib import Path
from typing import Callable


def resolve_device(device: str) -> str:
    """ "auto" -> "cuda" when torch sees a GPU, else "cpu"; a CUDA request without CUDA is an error."""
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device != "cpu" and device != "cuda" and not device.startswith("cuda:"):
        raise ValueError(f"--device {device!r}: choose auto, cpu or cuda")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError("--device cuda: no CUDA device is visible to torch; use --device cpu or auto")
    return device


def seed_everything(seed: int) -> None:
    """Python's, numpy's and torch's global generators (model init, dropout)."""
    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def atomic_write(path: str | Path, write: Callable[[Path], None]) -> Path:
    """Call `write(tmp)` on a temporary file beside `path`, fsync it, rename it over `path` and fsync the
    folder: a kill or a power loss at any point leaves the old file or the new one, never half of one
    (timm's checkpoint saver writes and renames the same way)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(Path(tmp))
        _fsync(tmp)  # the bytes are on disk before the name points at them
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync(path.parent, directory=True)  # and the rename itself survives a power loss
    return path


def _fsync(path, directory: bool = False) -> None:
    fd = os.open(path, os.O_RDONLY | (getattr(os, "O_DIRECTORY", 0) if directory else 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_text_atomic(path: str | Path, text: str) -> Path:
    return atomic_write(path, lambda tmp: tmp.write_text(text))


def package_versions() -> dict[str, str]:
    """The versions a store and a run record (and the benchmarks print)."""
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for name in ("speechcls", "torch", "torchaudio", "zarr", "numcodecs", "soundfile", "nvidia-dali-cuda130"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            pass
    return out


def source_commit() -> str | None:
    """The git commit of the speechcls checkout this code runs from; None when it is not a git checkout
    (an installed wheel, no git). Never raises: a run records it where it can."""
    import subprocess

    package = Path(__file__).resolve().parent
    try:
        top, commit = subprocess.run(
            ["git", "rev-parse", "--show-toplevel", "HEAD"], cwd=package, capture_output=True, text=True, timeout=5
        ).stdout.split()
    except (OSError, ValueError, subprocess.SubprocessError):
        return None
    # a wheel installed inside some other project's checkout must not report that project's commit
    return commit if Path(top).resolve() == package.parent else None


def available_ram() -> int:
    """Bytes of memory available to new allocations (MemAvailable); 4 GiB where /proc says nothing."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 4 << 30


class Progress:
    """The one callback protocol of the library's long calls (download, synth, featurize, fit): they
    report through it and print nothing themselves. This base does nothing, so a caller without a
    display passes nothing; the CLI's rich bar (cli/progress.py) implements it."""

    def start(self, what: str, total: int | None = None, done: int = 0) -> None:
        """A task begins: `total` units (None: unknown), `done` of them finished already (a resume)."""

    def advance(self, n: int = 1, **stats: float) -> None:
        """`n` more units done; `stats` (loss, acc, examples, ...) for the display."""

    def end(self, **summary) -> None:
        """The task is over; `summary` is what the front end may print (fit: the epoch's rows)."""

    def note(self, kind: str, **info) -> None:
        """A fact for the front end to show, outside any task (fit: kind "header" before training, what is
        trained on what and how)."""


def require_extra(what: str, extra: str, *modules: str) -> None:
    """ValueError in one line when a module of an optional extra is missing, naming the extra to install
    (checked before any work, so a missing package never costs a run or leaves a half-written file):
    `speechcls export needs onnxscript, which is not installed: pip install 'speechcls[export]'`."""
    import importlib.util

    for module in modules:
        try:
            found = importlib.util.find_spec(module) is not None
        except (ImportError, ValueError):  # a parent package missing, or a module set to None in sys.modules
            found = False
        if not found:
            raise ValueError(f"{what} needs {module}, which is not installed: pip install 'speechcls[{extra}]'")
