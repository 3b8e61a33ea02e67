"""What a featurize may write over, decided before it writes: a store it made is created, resumed,
repaired, rebuilt or left (`plan`); the tree being read, a non-store folder and a file featurize did not
write are never replaced, --overwrite or not. And the two things around every write: the lock that keeps
a second featurize off a store, and the one line for a store that cannot be written."""

from __future__ import annotations

import contextlib
import json
import os
import re
from pathlib import Path

from speechcls.store.format import (
    ARRAYS,
    FORMAT_VERSION,
    DamagedStore,
)
from speechcls.store.location import Location, exists, is_empty, members, open_group, read_bytes, to_location
from speechcls.store.proof import lost_chunks, structure_damage
from speechcls.store.reader import read_attrs


def plan(loc: Location, request: dict, engine: dict, overwrite: bool, tree: Path | None = None) -> str | None:
    """What to do with what is already at `loc`: None (create), "present", "resume", "repair" (a
    complete store that lost chunk objects) or "rebuild" (an older store format). A store made with
    other settings or by another engine is an error unless `overwrite`.

    Nothing but a store speechcls made is ever replaced, `overwrite` or not: a location that is, holds or
    lies inside the `tree` being read is refused (a store there would delete the clips or land among the
    word folders), and so is any other non-empty location that is not a speechcls store; and a store is
    replaced only with nothing in it but its own objects (`foreign_files`: a user's notes.txt is never
    deleted). A store of this format whose metadata or attributes are not what featurize wrote is damaged:
    an error naming what differs (never "present"), which --overwrite answers."""
    if tree is not None:
        _refuse_tree(loc, tree)
    if not exists(loc):
        return None
    if isinstance(loc, Path) and not loc.is_dir():
        raise ValueError(f"{loc} is a file, not a speechcls feature store; choose another --out")
    if not exists(loc, "zarr.json"):
        if is_empty(loc):
            return None
        raise ValueError(_not_a_store(loc))
    attrs = _speechcls_attrs(loc)
    if attrs is None:
        if not _damaged_group_metadata(loc):
            raise ValueError(_not_a_store(loc))
        if not overwrite:
            raise DamagedStore(
                f"{loc}: the store's zarr.json cannot be read (damaged: a flipped byte, a partial copy?), so its "
                "attributes are lost; make it anew with its featurize command and --overwrite"
            )
        attrs = {}
    version = attrs.get("format_version")
    if overwrite or not isinstance(version, int) or version < FORMAT_VERSION or not attrs.get("created"):
        refuse_foreign_files(loc)  # what follows replaces the store
    if overwrite:
        return None
    if version < FORMAT_VERSION:
        return "rebuild"  # made by an older speechcls: unreadable by this one, so made again in full
    if version == FORMAT_VERSION and attrs.get("created") and (problem := structure_damage(loc, _open(loc))):
        raise DamagedStore(problem)
    old = attrs.get("request")
    if old != request:
        diff = sorted(k for k in set(old or {}) | set(request) if (old or {}).get(k) != request.get(k))
        raise ValueError(
            f"{loc} holds a store made with other settings (differs in: {', '.join(diff)}); "
            "pass --overwrite to replace it or --out for a new store"
        )
    if attrs.get("complete") and not lost_chunks(loc, _open(loc)):
        return "present"
    if attrs.get("engine") != engine:
        raise ValueError(
            f"{loc} was made with {attrs.get('engine')}, not {engine}: finish or repair it with the same --backend "
            "and --device (resumed stores must be byte-identical), or --overwrite"
        )
    return "repair" if attrs.get("complete") else "resume"


def _refuse_tree(loc: Location, tree: Path) -> None:
    """A local location that is the tree, holds it or lies inside it. An fsspec URL never holds the
    local tree, so only the store check of `plan` applies there."""
    if not isinstance(loc, Path):
        return
    at, root = loc.resolve(), Path(tree).resolve()  # resolved: a symlink or "../" cannot hide the tree
    if at == root or at in root.parents:
        what = "is the tree being read" if at == root else f"holds the tree being read ({tree})"
        raise ValueError(f"{loc} {what}: a store there would replace the clips; choose another --out")
    if root in at.parents:
        raise ValueError(
            f"{loc} lies inside the tree being read ({tree}): its index would take the store for a word; "
            "choose another --out"
        )


def _open(loc: Location):
    return open_group(loc, mode="r")


def _damaged_group_metadata(loc: Location) -> bool:
    """The group's zarr.json of a speechcls store is unreadable while its arrays are there: every array of
    a format-4 or later store (chunk_crc32c is format 5's) holds a zarr.json, and nothing else is at the top."""

    try:
        json.loads(read_bytes(loc, "zarr.json"))
        return False  # readable: another kind of Zarr node, or none
    except (ValueError, UnicodeDecodeError):
        pass
    tops = {key.split("/")[0] for key in members(loc)} - {"zarr.json"}
    needed = set(ARRAYS) - {"chunk_crc32c"}
    return needed <= tops <= set(ARRAYS) and all(exists(loc, f"{name}/zarr.json") for name in needed)


def foreign_files(loc: Location) -> list[str]:
    """The files under a store that are none of its own objects: its zarr.json, and in each array's folder
    (one holding a zarr.json) that zarr.json and the chunk objects under c/; the temporary files of writes
    a kill cut short (`<name>.<32 hex>.partial`) count as its own."""
    keys = members(loc)
    arrays = {k.split("/")[0] for k in keys if k.count("/") == 1 and k.endswith("/zarr.json")}

    def own(key: str) -> bool:
        parts = key.split("/")
        if key == "zarr.json" or PARTIAL.fullmatch(parts[-1]):
            return True
        chunk = len(parts) > 2 and parts[1] == "c" and all(p.isdigit() for p in parts[2:])
        return parts[0] in arrays and (parts[1:] == ["zarr.json"] or chunk)

    return sorted(k for k in keys if not own(k))


def refuse_foreign_files(loc: Location) -> None:
    """Replacing a store deletes its folder: refused, naming them, while it holds files featurize did not
    write (a user's notes, another program's output), --overwrite or not."""
    foreign = foreign_files(loc)
    if foreign:
        more = f" and {len(foreign) - 3} more" if len(foreign) > 3 else ""
        raise ValueError(
            f"{loc} holds {', '.join(foreign[:3])}{more}, which featurize did not write: replacing the store would "
            "delete it, and featurize never deletes a file of yours; move it out of the store's folder (or remove "
            "the folder yourself), then run the command again"
        )


def _speechcls_attrs(loc: Location) -> dict | None:
    """The attributes of the store at `loc` when speechcls made it (a Zarr group recording its format
    version and feature parameters, as every format so far does), else None."""
    try:
        attrs = read_attrs(loc)
    except (ValueError, TypeError, KeyError):  # an array, unreadable JSON, another kind of zarr.json
        return None
    described = isinstance(attrs.get("params"), dict) or isinstance(attrs.get("request"), dict)
    return attrs if isinstance(attrs.get("format_version"), int) and described else None


def store_attrs(loc: Location) -> dict | None:
    """The attributes of a speechcls store at `loc`, or None when there is none (nothing there, an empty
    folder, anything else)."""
    loc = to_location(loc)
    if not exists(loc) or not exists(loc, "zarr.json"):
        return None
    return _speechcls_attrs(loc)


def _not_a_store(loc: Location) -> str:
    return (
        f"{loc} is not empty and is not a speechcls feature store: --overwrite only replaces stores speechcls "
        "made; choose another --out"
    )


PARTIAL = re.compile(r".*\.[0-9a-f]{32}\.partial")  # zarr LocalStore's temporary file of one object write


def cannot_write(loc: Location, e: OSError, then: str = "") -> ValueError:
    """The one line for a store that cannot be written: the system's reason, the folder that refused when
    it is outside the store (a read-only or forbidden parent, the lock file's folder), and what to do: free
    space only when space ran out."""
    import errno

    reason = e.strerror or str(e) or type(e).__name__
    hint = (
        "the disk is full; free some space or choose another --out"
        if e.errno in (errno.ENOSPC, errno.EDQUOT)
        else "choose another --out"
    )
    where = ""
    if e.filename is not None and isinstance(loc, Path):
        failed = Path(os.fsdecode(e.filename))
        if failed != loc and loc not in failed.parents:  # outside the store: say which folder refused
            where = f"{failed if failed in loc.parents else failed.parent}: "
    return ValueError(f"cannot write the store at {loc}: {where}{reason}; {hint}{then}")


@contextlib.contextmanager
def lock(loc: Location):
    """Hold an exclusive lock on a local store while featurize writes it: a second featurize on the same
    store (which would do the work twice, or with --overwrite pull the store from under the first) is
    refused at once. The lock is a file beside the store (.<name>.lock) under flock, which the kernel
    releases when the process ends, however it ends: a killed run leaves no stale lock. Stores at URLs
    are not locked (object stores have no such lock)."""
    if not isinstance(loc, Path):
        yield
        return
    import fcntl
    import socket

    try:
        loc.parent.mkdir(parents=True, exist_ok=True)
        handle = open(loc.with_name(f".{loc.name}.lock"), "a+")
    except OSError as e:
        raise cannot_write(loc, e) from None
    with handle as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.seek(0)
            holder = f.read().strip() or "another process"
            raise ValueError(
                f"{loc}: another featurize is writing this store ({holder}); wait for it to finish or stop it, then "
                "run this command again"
            ) from None
        f.seek(0)
        f.truncate()
        f.write(f"pid {os.getpid()} on {socket.gethostname()}\n")
        f.flush()
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)
