"""What every stage needs from the machine it runs on: the device, seeding, atomic file writes, the
package versions a store or run records, available memory. torch is imported inside the functions that
need it, so the CLI can import this module and still answer `--help` at once."""

from __future__ import annotations

import errno
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
    (timm's checkpoint saver writes and renames the same way). The temporary file is `.<name>.<random>.tmp`:
    removed on any error; one left by a kill is removed by the next run of the command that owns the folder
    (engine/run_dir.py's RunDir.remove_temps for a run).

    Errors name what the user knows, never the temporary file: a folder that cannot take a new file
    (read-only, permission denied) is an OSError naming the folder; a write that fails for want of space
    (ENOSPC, EDQUOT: also a RuntimeError of torch's C++ writer, which loses the errno) is an OSError
    naming `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as e:  # the folder takes no new file: say which folder, not the random name tried
        raise OSError(e.errno, e.strerror, str(path.parent)) from e
    os.close(fd)
    try:
        try:
            write(Path(tmp))
            _fsync(tmp)  # the bytes are on disk before the name points at them
            os.replace(tmp, path)
        except OSError as e:
            if e.errno in _FULL or e.filename in (None, tmp):
                raise OSError(e.errno, e.strerror, str(path)) from e
            raise
        except RuntimeError as e:  # torch's writers: "unexpected pos 704 vs 598", no errno
            if _out_of_space(Path(tmp)):
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path)) from e
            raise
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync(path.parent, directory=True)  # and the rename itself survives a power loss
    return path


_FULL = (errno.ENOSPC, errno.EDQUOT)


def _out_of_space(tmp: Path) -> bool:
    """Whether a failed write failed for want of space: 64 KiB more on the same file fail with ENOSPC or
    EDQUOT, or the file system has under 1 MiB free."""
    try:
        with open(tmp, "ab") as f:
            f.write(bytes(1 << 16))
            f.flush()
            os.fsync(f.fileno())
    except OSError as e:
        if e.errno in _FULL:
            return True
    try:
        st = os.statvfs(tmp.parent)
    except OSError:
        return False
    return st.f_bavail * st.f_frsize < 1 << 20


def _fsync(path, directory: bool = False) -> None:
    fd = os.open(path, os.O_RDONLY | (getattr(os, "O_DIRECTORY", 0) if directory else 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_text_atomic(path: str | Path, text: str) -> Path:
    return atomic_write(path, lambda tmp: tmp.write_text(text))


# --- files a command writes where the user names them (--out): the one rule ---------------------------
# A Zarr hierarchy (a feature store, or any other) has one of these in every group and array folder.
_ZARR_FILES = ("zarr.json", ".zgroup", ".zarray")


def check_out(
    path: str | Path,
    *,
    reads: tuple = (),
    own: Callable[[Path], bool] | None = None,
    overwrite: bool = False,
    option: str = "--out",
    command: str = "this command",
) -> Path:
    """Where a command may write a file the user names, checked before any work (then the command writes
    it with atomic_write). The rule, the same for every command (docs/reliability.md, "No command
    overwrites its input"):

    - never a folder, and never a file inside a Zarr store (only featurize writes a store): refused,
      --overwrite or not;
    - an existing file that the command reads (`reads`; the same file by inode: another spelling, a
      symbolic or a hard link count), a checkpoint, a file of a Speech Commands tree or any other file that
      `own` does not recognise as this command's own earlier output: refused unless `overwrite`;
    - an absent file, or the command's own earlier output (`own(path)`: e.g. a file carrying the mark
      its writer puts in every file, see `marked`): written.

    ValueError in one line naming the file, what it is and what to do."""
    path = Path(path)
    store = zarr_root(path)
    if store is not None:
        where = "is a Zarr store" if store == path else f"is inside the Zarr store {store}"
        raise ValueError(
            f"{option} {path} {where}: only featurize writes a store, and {command} never writes into one; "
            f"choose another {option}"
        )
    if path.is_dir():
        raise ValueError(f"{option} {path} is a folder; give the name of a file to write")
    if not (path.exists() or path.is_symlink()):
        return path
    read = next((r for r in reads if _same_file(path, Path(r))), None)
    if read is None and own is not None and path.is_file() and own(path):
        return path
    if overwrite:
        return path
    if read is not None:
        what = f"is the input {command} reads ({read})"
    else:
        what = f"is {_what_it_is(path)}, which {command} did not write"
    raise ValueError(
        f"{option} {path} {what}: {command} never writes over it unless told to; choose another {option}, or "
        "add --overwrite to replace it"
    )


def check_out_dir(path: str | Path, *, option: str = "--out", command: str = "this command") -> Path:
    """A folder a command writes named files into (lr-find, bench), checked before any work: never a
    file, a Zarr store or a folder inside one, nor a Speech Commands tree. Each file it then writes there
    is checked with check_out."""
    path = Path(path)
    store = zarr_root(path)
    if store is not None:
        where = "is a Zarr store" if store == path else f"is inside the Zarr store {store}"
        raise ValueError(f"{option} {path} {where}: {command} never writes into a store; choose another {option}")
    if path.exists() and not path.is_dir():
        raise ValueError(f"{option} {path} is a file, not a folder; choose another {option}")
    tree = tree_root(path / "x")
    if tree is not None:
        raise ValueError(
            f"{option} {path} is inside the Speech Commands tree {tree}: {command} keeps its files out of the "
            f"data; choose another {option}"
        )
    return path


def marked(mark: bytes, *, at_start: bool = False) -> Callable[[Path], bool]:
    """`own` for check_out: whether a file holds `mark` (at its start, or anywhere: read through mmap, so a
    large file costs no memory), the mark its writer puts in every file it writes."""
    import mmap

    def holds(path: Path) -> bool:
        try:
            with open(path, "rb") as f:
                if at_start:
                    return f.read(len(mark)) == mark
                if os.fstat(f.fileno()).st_size < len(mark):
                    return False
                with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as m:
                    return m.find(mark) >= 0
        except (OSError, ValueError):
            return False

    return holds


def zarr_root(path: str | Path) -> Path | None:
    """The outermost folder of the Zarr hierarchy that `path` is, or is inside; None if none."""
    found, path = None, Path(path).resolve()
    for folder in (path, *path.parents):
        try:
            if folder.is_dir() and any((folder / name).is_file() for name in _ZARR_FILES):
                found = folder
            elif found is not None:
                break
        except OSError:
            break
    return found


def tree_root(path: str | Path) -> Path | None:
    """The Speech Commands tree (a folder with the release's lists or _background_noise_) that `path`'s
    folder is, or is inside; None if none."""
    from speechcls import config

    for folder in Path(path).resolve().parents:
        try:
            if any((folder / n).exists() for n in (config.VALIDATION_LIST, config.TESTING_LIST, config.BACKGROUND_DIR)):
                return folder
        except OSError:
            return None
    return None


def _same_file(a: Path, b: Path) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def _what_it_is(path: Path) -> str:
    """What an existing file is, for check_out's refusal."""
    import zipfile

    tree = tree_root(path)
    if tree is not None:
        return f"a file of the Speech Commands tree {tree}"
    try:
        if zipfile.is_zipfile(path) and any(n.endswith("/data.pkl") for n in zipfile.ZipFile(path).namelist()):
            return "a checkpoint (a torch .pt file)"
    except (OSError, zipfile.BadZipFile):
        pass
    return "an existing file"


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
