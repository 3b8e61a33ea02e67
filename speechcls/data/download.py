"""Fetch a Speech Commands release: resumable HTTP download, SHA-256 check, safe extraction.

Written on the standard library (urllib, hashlib, tarfile) because no well-kept package does all three
of resume-by-Range, verify-before-extract and refuse-escaping-members; `tarfile`'s "data" filter is
still applied as a second guard after our own checks, which refuse (rather than rewrite, as the filter
does) absolute member names.
"""

from __future__ import annotations

import gzip
import hashlib
import http.client
import lzma
import os
import re
import shutil
import socket
import tarfile
import urllib.error
import urllib.request
import zlib
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from speechcls import config
from speechcls.runtime import Progress

DONE_MARKER = ".speechcls-extracted"  # written last into a finished tree; its presence = nothing to redo
# The largest clip: one second of 16 kHz 16-bit mono plus the 44-byte WAV header (the largest file of the
# real v0.01 clips in ../shared/data). Unpacked, a release is at most n_clips of these plus its noise
# recordings (~13 MB): v0.01 <= 2.07 GB (a 1.4 GB archive), v0.02 <= 3.39 GB (2.3 GB).
MAX_CLIP_BYTES = 32_044
EXTRACT_MARGIN = 2  # the caps are twice those bounds: a release fits with room, a decompression bomb does not
_SHA256 = re.compile(r"[0-9a-fA-F]{64}")


@dataclass(frozen=True)
class ExtractLimits:
    """Caps on what an archive may unpack to: members and total bytes of its regular files."""

    members: int
    bytes: int
    what: str  # what the archive is said to be, for the message: "Speech Commands v0.01 (64,727 clips)"

    @classmethod
    def for_release(cls, rel: config.DatasetRelease) -> "ExtractLimits":
        return cls(
            members=EXTRACT_MARGIN * rel.n_clips,  # clips + ~40 folders, lists and noise files
            bytes=EXTRACT_MARGIN * rel.n_clips * MAX_CLIP_BYTES,
            what=f"Speech Commands {rel.version} ({rel.n_clips:,} clips)",
        )


class DownloadError(RuntimeError):
    """The transfer failed (network, HTTP status, short read); a partial file is kept for resuming."""


class UnsafeArchiveError(ValueError):
    """A member would land outside the target folder; nothing of the archive is left extracted."""


def archive_path(root: Path) -> Path:
    """The archive sits beside the tree it unpacks to: data/speech_commands_v0.01.tar.gz."""
    return root.with_name(root.name + ".tar.gz")


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(config.DOWNLOAD_READ_BYTES):
            h.update(block)
    return h.hexdigest()


def fetch(url: str, dest: Path, progress: Progress | None = None) -> Path:
    """Download `url` to `dest`, resuming `dest`.part with an HTTP Range request where it exists.

    A server that ignores the Range (answers 200) restarts the transfer from zero. A failed or short
    transfer raises DownloadError and keeps the .part file, so the next call continues where it ended.
    """
    progress = progress or Progress()
    part = dest.with_name(dest.name + ".part")
    dest.parent.mkdir(parents=True, exist_ok=True)
    have = part.stat().st_size if part.exists() else 0
    request = urllib.request.Request(url, headers={"User-Agent": "speechcls"})
    if have:
        request.add_header("Range", f"bytes={have}-")
    try:
        response = urllib.request.urlopen(request, timeout=config.CONNECT_TIMEOUT_S)
    except urllib.error.HTTPError as e:
        if e.code == 416 and have:  # the .part already holds every byte the server has
            part.replace(dest)
            return dest
        raise DownloadError(f"{url}: HTTP {e.code} {e.reason}") from e
    except (urllib.error.URLError, socket.timeout, OSError) as e:
        reason = getattr(e, "reason", e)
        raise DownloadError(f"cannot reach {url} ({reason})") from e
    with response:
        if have and response.status != 206:  # Range ignored: the body is the whole file again
            have = 0
        length = response.headers.get("Content-Length")
        total = have + int(length) if length is not None else None
        progress.start("download", total, have)  # bytes; total None when unknown
        got = have
        try:
            with open(part, "ab" if have else "wb") as f:
                while block := response.read(config.DOWNLOAD_READ_BYTES):
                    f.write(block)
                    got += len(block)
                    progress.advance(len(block))
        except (OSError, http.client.HTTPException) as e:  # reset connection, IncompleteRead, timeout
            raise DownloadError(f"{url}: transfer broke off after {got} bytes ({e!r}); run again to resume") from e
    if total is not None and got < total:
        raise DownloadError(f"{url}: transfer broke off after {got} of {total} bytes; run again to resume")
    part.replace(dest)
    return dest


def _check_member(member: tarfile.TarInfo, target: Path) -> None:
    """Refuse any member that could write outside `target`: absolute names, `..`, links pointing out,
    device files. `target` must be resolved."""
    name = member.name
    pure = PurePosixPath(name)
    if pure.is_absolute() or name.startswith(("/", "\\")) or (len(name) > 1 and name[1] == ":"):
        raise UnsafeArchiveError(f"archive member {name!r} has an absolute path; refusing to extract")
    dest = (target / name).resolve()
    if not dest.is_relative_to(target):
        raise UnsafeArchiveError(f"archive member {name!r} would land outside {target}; refusing to extract")
    if member.issym() or member.islnk():
        link = PurePosixPath(member.linkname)
        if link.is_absolute():
            raise UnsafeArchiveError(f"archive member {name!r} links to absolute path {member.linkname!r}; refusing")
        base = dest.parent if member.issym() else target  # hard link names are relative to the archive root
        if not (base / link).resolve().is_relative_to(target):
            raise UnsafeArchiveError(
                f"archive member {name!r} links to {member.linkname!r}, outside {target}; refusing to extract"
            )
    if not (member.isfile() or member.isdir() or member.issym() or member.islnk()):
        raise UnsafeArchiveError(f"archive member {name!r} is a device or fifo; refusing to extract")


def extract(archive: Path, target: Path, limits: ExtractLimits | None = None) -> None:
    """Extract `archive` into `target` (which must not exist yet), all or nothing.

    Members go to a sibling temporary folder first; only when every member passed the checks is it
    renamed to `target`, so an unsafe or broken archive leaves nothing behind. With `limits`, an archive
    of more members or more unpacked bytes than they allow is refused (UnsafeArchiveError) before the
    member that passes them is written.
    """
    target = Path(target)
    tmp = target.with_name(f".{target.name}.extracting")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    real = tmp.resolve()
    try:
        with tarfile.open(archive, mode="r|*") as tar:  # streaming: one pass over a 1.4 GB gzip
            members = size = 0
            for member in tar:
                _check_member(member, real)
                members, size = members + 1, size + (member.size if member.isfile() else 0)
                if limits is not None:
                    _check_limits(archive, limits, members, size)
                tar.extract(member, real, filter="data")  # second guard; also drops setuid bits
        if not members:  # tarfile reads an empty file as an archive of nothing
            raise tarfile.ReadError("it holds no members")
    except (tarfile.TarError, EOFError, zlib.error, lzma.LZMAError, gzip.BadGzipFile) as e:
        # not a tar at all (random bytes, an HTML page, an empty file), or one cut short inside its gzip
        shutil.rmtree(tmp, ignore_errors=True)
        raise ValueError(
            f"{archive}: not a readable .tar.gz archive ({type(e).__name__}: {e}); nothing was extracted. Its "
            "SHA-256 was checked, so it is what --url serves: check --url and --sha256, or remove the file and "
            "download again"
        ) from None
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    tmp.rename(target)


def _check_limits(archive: Path, limits: ExtractLimits, members: int, size: int) -> None:
    if members > limits.members:
        raise UnsafeArchiveError(
            f"{archive}: more than {limits.members:,} members, the cap for {limits.what}; refusing to "
            "extract it (nothing was extracted). Is --url the archive of this --version?"
        )
    if size > limits.bytes:
        raise UnsafeArchiveError(
            f"{archive}: unpacks to more than {limits.bytes:,} bytes ({limits.bytes / 1e9:.1f} GB), the cap for "
            f"{limits.what}; refusing to extract it (nothing was extracted). Is --url the archive of this --version?"
        )


def download_release(
    version: str = config.DEFAULT_VERSION,
    root: str | Path | None = None,
    url: str | None = None,
    sha256: str | None = None,
    progress: Progress | None = None,
) -> tuple[Path, str]:
    """Make sure the release `version` is extracted at `root` (default data/speech_commands_<version>).

    Returns (root, what happened: "present" | "extracted"). Steps are skipped when already done: a
    finished tree (marker file) is left alone; a finished archive is not downloaded again.
    A checksum mismatch deletes the archive and extracts nothing; a malformed `sha256` is refused before
    any download; an archive larger than twice the release (ExtractLimits) is refused and extracts nothing.
    """
    rel = config.release(version)
    if sha256 is not None and not _SHA256.fullmatch(sha256.strip()):
        raise ValueError(
            f"--sha256 {sha256!r} is not a SHA-256 (64 hexadecimal digits); copy it again from where the archive "
            "is published, or leave --sha256 out to check against the release's own"
        )
    root = Path(root) if root is not None else config.default_root(version)
    url = url or rel.url
    expected = (sha256 or rel.sha256).strip().lower()
    if (root / DONE_MARKER).is_file():
        return root, "present"
    if root.exists() and any(root.iterdir()):
        raise ValueError(
            f"{root} exists but was not completed by speechcls download. If it is a copy of the "
            "dataset, use it as it is (--root it in later commands); otherwise remove it and run again."
        )
    archive = archive_path(root)
    if not archive.is_file():
        try:
            fetch(url, archive, progress)
        except DownloadError as e:
            raise DownloadError(
                f"{e}.\nWithout network access, copy the extracted dataset somewhere and pass its folder as "
                f"--root (e.g. --root /path/to/{rel.name}), or make demo data with `speechcls synth`."
            ) from e
    actual = sha256_file(archive)
    if actual != expected:
        archive.unlink()
        raise ValueError(
            f"{archive}: SHA-256 {actual} does not match the expected {expected}; nothing was extracted "
            "and the archive was removed. Run again to download it anew, or check --url / --sha256."
        )
    if root.exists():
        root.rmdir()  # empty (checked above); extract() renames its temporary folder onto it
    extract(archive, root, ExtractLimits.for_release(rel))
    (root / DONE_MARKER).write_text(f"{expected}  {url}\n")
    return root, "extracted"


def remove_archive(root: Path) -> None:
    """Free the disk an extracted archive occupies (1.4 GB for v0.01); called by `--remove-archive`."""
    a = archive_path(root)
    if a.exists():
        os.remove(a)
