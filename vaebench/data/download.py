"""Resumable, MD5-checked HTTP downloads: how `vaebench data fetch --source url` gets CelebA's files.

A download is written to `<name>.partial` beside its target and becomes `<name>` (one rename) only once
it is whole and has the expected MD5, so whoever reads the target never sees half a file. An
interrupted download (the connection dropped, the process killed) keeps its `.partial`: the next try
asks for the rest (`Range: bytes=<size>-`) and appends the server's 206 answer; a server that ignores
Range answers 200 with the whole file, which then overwrites the partial from byte zero. The MD5 of
the finished file is the check either way.

Failures are typed (`DownloadFailed` and its subclasses, `DiskFull`) and carry what a message needs;
the caller, which knows which source to try next, turns them into a paragraph for people.
"""

from __future__ import annotations

import errno
import hashlib
import http.client
import os
import re
import shutil
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

CHUNK_BYTES = 1 << 20
TIMEOUT_S = 30.0
"""Socket timeout: a stalled connection counts as an interruption after this long, not after hours."""
SPACE_MARGIN_BYTES = 64 << 20
"""Left free beyond what a download or an unzip needs, so that the disk is never filled to the last byte."""

Progress = Callable[[int, int | None], None]
"""Called with (bytes in the file so far, the whole file's size in bytes or None when unknown)."""


class DiskFull(Exception):
    """Not enough free space for a write (checked before it), or the disk filled up during it (ENOSPC)."""

    def __init__(self, folder: Path, needed: int | None, free: int) -> None:
        self.folder, self.needed, self.free = folder, needed, free
        wanted = f"{needed} bytes needed, " if needed is not None else "the disk filled up, "
        super().__init__(f"{folder}: {wanted}{free} bytes free")


class DownloadFailed(Exception):
    """A download that did not produce its target; `url` is what was asked for, `why` says what happened."""

    def __init__(self, url: str, why: str) -> None:
        self.url, self.why = url, why
        super().__init__(f"{url}: {why}")


class HTTPStatusFailed(DownloadFailed):
    """The server answered with an HTTP error status (403, 404, 5xx ...)."""

    def __init__(self, url: str, status: int, reason: str) -> None:
        self.status, self.reason = status, reason
        super().__init__(url, f"HTTP {status} ({reason})")


class Unreachable(DownloadFailed):
    """No answer at all: DNS, a refused connection, a timeout before the first byte, TLS."""


class Interrupted(DownloadFailed):
    """The body stopped short of its announced length on every try; the part received is kept."""

    def __init__(self, url: str, partial: Path, received: int, expected: int, tries: int) -> None:
        self.partial, self.received, self.expected, self.tries = partial, received, expected, tries
        super().__init__(url, f"stopped after {received} of {expected} bytes, {tries} time(s)")


class ChecksumMismatch(DownloadFailed):
    """The finished file's MD5 is not the expected one; the file was deleted."""

    def __init__(self, url: str, expected: str, actual: str, size: int) -> None:
        self.expected, self.actual, self.size = expected, actual, size
        super().__init__(url, f"MD5 {actual} of {size} bytes, expected {expected}")


def md5_file(path: Path) -> str:
    """The file's MD5 (hex), read in 1 MiB blocks (about 3 s for CelebA's 1.4 GB archive)."""
    digest = hashlib.md5(usedforsecurity=False)  # an integrity check against the published sums
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(CHUNK_BYTES), b""):
            digest.update(block)
    return digest.hexdigest()


def is_disk_full(error: OSError) -> bool:
    """Whether an OSError says the disk (or the user's quota on it) is full."""
    return error.errno in (errno.ENOSPC, errno.EDQUOT)


def ensure_free_space(folder: Path, needed: int) -> None:
    """Raise DiskFull unless the disk holding `folder` (or its nearest existing parent) has `needed` bytes
    free, plus SPACE_MARGIN_BYTES."""
    existing = Path(folder).absolute()
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    free = shutil.disk_usage(existing).free
    if needed > 0 and free < needed + SPACE_MARGIN_BYTES:
        raise DiskFull(Path(folder), needed, free)


def partial_path(target: Path) -> Path:
    """Where the download of `target` is written until it is whole and checked: `<name>.partial`."""
    return target.with_name(target.name + ".partial")


def download(
    url: str,
    target: Path,
    md5: str | None,
    *,
    size_hint: int = 0,
    tries: int = 3,
    progress: Progress | None = None,
    timeout: float = TIMEOUT_S,
) -> Path:
    """Download `url` to `target`, resuming a `.partial` left by an earlier try, and check its MD5.

    A target already there with the expected MD5 is kept and nothing is downloaded. Each try that ends
    short of the announced length is resumed with a Range request, up to `tries` tries in all; then
    `Interrupted` is raised and the partial kept for the next call. `size_hint` (bytes) is checked
    against the free space when the server does not say the size. Raises `DownloadFailed` subclasses
    and `DiskFull`; the target exists only when the download succeeded.
    """
    target = Path(target)
    if target.is_file() and (md5 is None or md5_file(target) == md5):
        return target
    partial = partial_path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    for attempt in range(1, tries + 1):
        start = partial.stat().st_size if partial.is_file() else 0
        opened = _open(url, start, timeout)
        if opened is None:  # 416: the partial already holds the whole file; its MD5 will tell
            break
        response, start, total = opened
        with response:
            ensure_free_space(target.parent, (total if total is not None else size_hint) - start)
            received = _append(response, partial, start, total, progress)
        if total is None or received >= total:
            break
        if attempt == tries:
            raise Interrupted(url, partial, received, total, tries)
    _check_and_move(url, partial, target, md5)
    return target


def _open(url: str, start: int, timeout: float) -> tuple[http.client.HTTPResponse, int, int | None] | None:
    """(response, the byte it starts at, the whole file's size or None), asking for bytes `start`- when
    start > 0; None when the server says that range is past the end (416)."""
    headers = {"User-Agent": "vaebench", "Accept-Encoding": "identity"}
    if start:
        headers["Range"] = f"bytes={start}-"
    try:
        response = urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=timeout)
    except urllib.error.HTTPError as error:
        error.close()
        if error.code == 416 and start:
            return None
        raise HTTPStatusFailed(url, error.code, str(error.reason)) from None
    except (urllib.error.URLError, OSError, http.client.HTTPException) as error:
        reason = getattr(error, "reason", error)
        raise Unreachable(url, f"{type(error).__name__}: {reason}") from None
    if response.status == 206:
        found = re.fullmatch(r"bytes (\d+)-\d+/(\d+|\*)", response.headers.get("Content-Range", "").strip())
        if found is not None and int(found[1]) == start:
            return response, start, None if found[2] == "*" else int(found[2])
        response.close()  # a range we did not ask for: start again from zero
        return _open(url, 0, timeout)
    length = response.headers.get("Content-Length")
    return response, 0, int(length) if length and length.isdigit() else None  # 200: the whole file


def _append(
    response: http.client.HTTPResponse,
    partial: Path,
    start: int,
    total: int | None,
    progress: Progress | None,
) -> int:
    """Write the body to `partial` from byte `start` on (0: overwrite it); return its size afterwards.

    A connection that drops or stalls ends the body early (the caller resumes); ENOSPC raises DiskFull.
    """
    done = start
    try:
        with open(partial, "ab" if start else "wb") as handle:
            while True:
                try:
                    chunk = response.read(CHUNK_BYTES)
                except (OSError, http.client.HTTPException):  # reset, timeout, IncompleteRead
                    break
                if not chunk:
                    break
                handle.write(chunk)
                done += len(chunk)
                if progress is not None:
                    progress(done, total)
    except OSError as error:
        if is_disk_full(error):
            raise DiskFull(partial.parent, None, shutil.disk_usage(partial.parent).free) from None
        raise
    return done


def _check_and_move(url: str, partial: Path, target: Path, md5: str | None) -> None:
    """Rename the finished partial to `target` if its MD5 is `md5`; otherwise delete it, ChecksumMismatch."""
    if md5 is not None:
        actual = md5_file(partial)
        if actual != md5:
            size = partial.stat().st_size
            partial.unlink()
            raise ChecksumMismatch(url, md5, actual, size)
    os.replace(partial, target)
