"""Downloading a published data file: mirrors in turn, retries with back-off on
transient errors, checksums, and an atomic rename into place.

:func:`fetch` is what :func:`fastmlp.datasets.load` calls for each missing file;
:class:`DownloadError` is re-exported as ``fastmlp.datasets.DownloadError``.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence

from ._util import atomic_write, bar

#: HTTP statuses worth asking again for: timeouts, rate limits, server trouble.
TRANSIENT_STATUS = frozenset({408, 425, 429, 500, 502, 503, 504})
#: Retries of a mirror after a transient error, and the first wait (doubled each time).
RETRIES, BACKOFF = 3, 1.0


class DownloadError(OSError):
    """No mirror delivered a verified file."""


class _Interrupted(DownloadError):
    """The transfer stopped early: worth another try."""


def transient(exc: BaseException) -> bool:
    """Is ``exc`` an error that another try may not meet (a dropped or timed-out
    connection, an interrupted transfer, a busy server)? A missing file (404), a
    refused request or a checksum mismatch is not."""
    if isinstance(exc, urllib.error.HTTPError):
        return exc.code in TRANSIENT_STATUS
    if isinstance(exc, urllib.error.URLError):
        exc = exc.reason if isinstance(exc.reason, BaseException) else exc
    # socket.timeout is TimeoutError since Python 3.10.
    return isinstance(exc, (_Interrupted, ConnectionError, TimeoutError,
                            http.client.HTTPException))


def fetch(filename: str, folder: str, md5: str, mirrors: Sequence[str], verbose: bool = True,
          timeout: float = 60.0, sha256: str | None = None, retries: int = RETRIES,
          backoff: float = BACKOFF, sleep: Callable[[float], object] = time.sleep) -> str:
    """Download ``filename`` from the first mirror that delivers it intact, into ``folder``.

    The bytes go to a temporary file in ``folder``; only a complete file whose
    MD5 (and SHA-256, when given) match is renamed to its final name. A mirror
    that fails with a transient error (see :func:`transient`) is tried again up
    to ``retries`` times, waiting ``backoff`` seconds, then twice as long each
    time; any other failure moves on to the next mirror. Returns the final path.

    Raises
    ------
    DownloadError
        Every mirror failed; the message lists each mirror's last failure.
    """
    final = os.path.join(folder, filename)
    failures = []
    for base in mirrors:
        url = base.rstrip("/") + "/" + filename
        for attempt in range(retries + 1):
            try:
                # A failed or corrupt download leaves nothing under the final name.
                with atomic_write(final) as out:
                    digests = _download(url, out, timeout, verbose)
                    for name, want in (("MD5", md5), ("SHA-256", sha256)):
                        if want is not None and digests[name] != want:
                            raise DownloadError(f"checksum mismatch: {name} {digests[name]}, "
                                                f"expected {want}")
                return final
            except (OSError, ValueError, http.client.HTTPException) as exc:
                if attempt < retries and transient(exc):
                    wait = backoff * 2 ** attempt
                    if verbose:
                        print(f"{url}: {exc}; trying again in {wait:g} s", file=sys.stderr,
                              flush=True)
                    sleep(wait)
                    continue
                tries = f" ({attempt + 1} tries)" if attempt else ""
                failures.append(f"{url}: {exc}{tries}")
                break
    raise DownloadError(f"could not download {filename}:\n  " + "\n  ".join(failures))


def _download(url, out, timeout, verbose) -> dict:
    """Copy ``url`` to the open file ``out``; returns its ``{"MD5": hex, "SHA-256": hex}``."""
    md5, sha = hashlib.md5(), hashlib.sha256()
    with urllib.request.urlopen(url, timeout=timeout) as response:
        length = response.headers.get("Content-Length")
        total = int(length) if length and length.isdigit() else None
        done, shown = 0, 0.0
        progress = _Bar(url, total, verbose)
        while True:
            try:
                chunk = response.read(1 << 16)
            except Exception as exc:  # http.client.IncompleteRead, resets, timeouts
                raise _Interrupted(f"transfer interrupted after {done} bytes ({exc!r})") \
                    from exc
            if not chunk:
                break
            out.write(chunk)
            md5.update(chunk)
            sha.update(chunk)
            done += len(chunk)
            now = time.monotonic()
            if now - shown > 0.2:
                progress.show(done)
                shown = now
        progress.close(done)
    if total is not None and done != total:
        raise _Interrupted(f"truncated transfer: {done} of {total} bytes")
    return {"MD5": md5.hexdigest(), "SHA-256": sha.hexdigest()}


class _Bar:
    """Download progress on stderr: a bar when stderr is a terminal, else one line at the end."""

    def __init__(self, url, total, verbose):
        self.url, self.total = url, total
        self.on = verbose
        self.live = verbose and sys.stderr.isatty()
        if self.on:
            size = f" ({total / 1e6:.1f} MB)" if total else ""
            print(f"Downloading {url}{size}", file=sys.stderr, flush=True)

    def show(self, done):
        if not self.live:
            return
        if self.total:
            sys.stderr.write(f"\r[{bar(done, self.total)}] {100 * done / self.total:5.1f}%")
        else:
            sys.stderr.write(f"\r{done / 1e6:.1f} MB")
        sys.stderr.flush()

    def close(self, done):
        if self.on:
            lead = "\r" if self.live else ""
            print(f"{lead}  {done:,} bytes received" + " " * 30, file=sys.stderr, flush=True)
