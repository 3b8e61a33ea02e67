"""Where a store lives: a local folder (zarr's LocalStore, atomic renames) or any fsspec URL (s3://,
gs://, ...: zarr's FsspecStore, credentials from the usual environment, e.g. AWS_ACCESS_KEY_ID /
AWS_ENDPOINT_URL for S3). Object stores write every object whole, so the local crash rules hold there.

The one place that knows the difference: everything else passes a `Location` around.
"""

from __future__ import annotations

import shutil
from pathlib import Path

Location = Path | str  # a local Path, or an fsspec URL kept as a string (Path() would fold its "//")


def to_location(value: str | Path) -> Location:
    """A local Path for a plain path or a file:// URL; the URL itself for any other fsspec protocol."""
    text = str(value)
    if text.startswith("file://"):
        return Path(text[len("file://") :])
    return text if "://" in text else Path(text)


def _fs(url: str):
    import fsspec

    try:
        fs, root = fsspec.core.url_to_fs(url)
    except ImportError as e:  # e.g. gs:// without gcsfs
        protocol = url.split("://", 1)[0]
        extra = {"s3": "s3", "s3a": "s3", "gs": "gcs", "gcs": "gcs"}.get(protocol)
        if extra is None:  # fsspec's own message names the package of any other protocol
            raise ValueError(f"{url}: {' '.join(str(e).split())}") from None
        package = {"s3": "s3fs", "gcs": "gcsfs"}[extra]
        raise ValueError(f"{url} needs {package}, which is not installed: pip install 'speechcls[{extra}]'") from None
    # fsspec caches listings per file-system instance; another process (a rank, a rerun) may have
    # written since, and a stale "absent" would make featurize start a store over
    fs.invalidate_cache()
    return fs, root


def join(loc: Location, *parts: str) -> Location:
    return loc.joinpath(*parts) if isinstance(loc, Path) else "/".join([loc.rstrip("/"), *parts])


def name(loc: Location) -> str:
    """The last part of the location without .zarr (runs are named after it)."""
    last = loc.name if isinstance(loc, Path) else loc.rstrip("/").rsplit("/", 1)[-1]
    return last.removesuffix(".zarr")


def exists(loc: Location, member: str = "") -> bool:
    """The location (or a member file under it) exists."""
    if isinstance(loc, Path):
        target = loc / member if member else loc
        return target.is_file() if member else target.exists()
    fs, root = _fs(str(join(loc, member)) if member else loc)
    return fs.isfile(root) if member else fs.exists(root)


def is_empty(loc: Location) -> bool:
    if isinstance(loc, Path):
        return not any(loc.iterdir())
    fs, root = _fs(loc)
    return not fs.ls(root)


def remove(loc: Location) -> None:
    if isinstance(loc, Path):
        shutil.rmtree(loc)
    else:
        fs, root = _fs(loc)
        fs.rm(root, recursive=True)


def glob(loc: Location, pattern: str) -> list[Location]:
    """Members of `loc` matching `pattern`, as locations of the same kind, sorted."""
    if isinstance(loc, Path):
        return sorted(loc.glob(pattern))
    fs, root = _fs(loc)
    protocol = loc.split("://", 1)[0]
    return sorted(f"{protocol}://{m}" for m in fs.glob(f"{root.rstrip('/')}/{pattern}"))


def members(loc: Location) -> list[str]:
    """Every object under the location, as keys relative to it ("features/c/3/0/0/0"): one listing."""
    if isinstance(loc, Path):
        return [p.relative_to(loc).as_posix() for p in loc.rglob("*") if p.is_file()]
    fs, root = _fs(loc)
    root = root.rstrip("/") + "/"
    return [k[len(root) :] for k in fs.find(root) if k.startswith(root)]


def dir_bytes(value: str | Path) -> int:
    """Bytes of every object under the location (0 where there is none)."""
    loc = to_location(value)
    if not isinstance(loc, Path):
        fs, root = _fs(loc)
        return int(fs.du(root)) if fs.exists(root) else 0
    return sum(p.stat().st_size for p in loc.rglob("*") if p.is_file())


def open_group(loc: Location, mode: str, attributes: dict | None = None):
    """The zarr group at `loc` (the opened store); `attributes` with mode "w": written with the group's
    metadata, in one object."""
    import zarr

    if not isinstance(loc, Path):
        _fs(loc)  # a clear error for a protocol whose package is missing
    return zarr.open_group(str(loc), mode=mode, **({"attributes": attributes} if attributes is not None else {}))


def read_bytes(loc: Location, key: str) -> bytes:
    """The stored bytes of one object under the location ("features/c/3/0/0/0")."""
    if isinstance(loc, Path):
        return (loc / key).read_bytes()
    fs, root = _fs(str(join(loc, key)))
    return fs.cat_file(root)
