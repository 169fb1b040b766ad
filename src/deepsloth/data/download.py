"""Download a canonical dataset archive, verify its MD5, import it.

Three separable steps so each can be tested offline: `fetch(url, dest)` (urllib, progress
bar, temp file + rename), `verify_checksum(path, md5)`, and the dataset's importer.
"""
from __future__ import annotations

import hashlib
import os
import tempfile
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Callable, Optional

from ..errors import DeepslothError
from ..progress import progress
from .registry import DATASETS, canonical_name, data_root, root_option


def md5sum(path: os.PathLike | str) -> str:
    h = hashlib.md5()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def verify_checksum(path: os.PathLike | str, md5: str) -> str:
    """Raise DeepslothError unless the file's MD5 equals `md5`; returns the digest."""
    path = Path(path)
    if not path.is_file():
        raise DeepslothError(f"file not found: {path}")
    got = md5sum(path)
    if got.lower() != md5.lower():
        raise DeepslothError(f"checksum mismatch for {path.name}: MD5 {got}, expected {md5} "
                             f"(incomplete or altered download)")
    return got


def fetch(url: str, dest: os.PathLike | str, *, opener: Optional[Callable] = None,
          timeout: float = 60.0, hint: str = "") -> Path:
    """Download `url` to `dest` atomically (a `.part` file renamed on success).

    `opener(url, timeout=...)` defaults to `urllib.request.urlopen` (looked up at call time).
    """
    opener = opener or urllib.request.urlopen
    dest = Path(dest)
    host = urllib.parse.urlsplit(url).netloc or url
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".part", dir=dest.parent)
    try:
        with os.fdopen(fd, "wb") as out:
            try:
                with opener(url, timeout=timeout) as resp:
                    total = resp.headers.get("Content-Length") if getattr(resp, "headers", None) else None
                    bar = progress(total=int(total) if total else None, desc=dest.name,
                                   unit="B")
                    try:
                        for block in iter(lambda: resp.read(1 << 20), b""):
                            out.write(block)
                            bar.update(len(block))
                    finally:
                        bar.close()
            except urllib.error.HTTPError as exc:
                raise DeepslothError(f"download of {url} failed: HTTP {exc.code} {exc.reason}"
                                     f"{hint}") from None
            except urllib.error.URLError as exc:
                raise DeepslothError(f"cannot reach {host}: {exc.reason}{hint}") from None
            except (OSError, ValueError) as exc:  # timeouts, resets, bad URLs
                raise DeepslothError(f"cannot reach {host}: {exc}{hint}") from None
        os.replace(tmp, dest)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return dest


def download(name: str, root: Optional[os.PathLike | str] = None, *, url: Optional[str] = None,
             md5: Optional[str] = None, keep_archive: bool = False,
             opener: Optional[Callable] = None, timeout: float = 60.0) -> Path:
    """Fetch the canonical archive of `name`, verify its MD5 and import it into the cache.

    The archive goes to `<root>/.downloads/` and is deleted after the import unless `keep_archive`
    (an archive that fails its checksum is deleted always). The canonical archive holds both splits,
    so both are replaced. Returns the imported dataset folder.
    """
    from .cifar10 import import_cifar10
    from .tinyimagenet import import_tinyimagenet

    name = canonical_name(name)
    info = DATASETS[name]
    url = url or info.url
    md5 = md5 or info.md5
    base = data_root(root)
    hint = (f"; download the archive elsewhere ({info.url}) and run "
            f"`deepsloth data import {name} /path/to/{info.archive}{root_option(root)}`")
    downloads = base / ".downloads"
    root_existed = base.exists()
    try:
        archive = fetch(url, downloads / info.archive, opener=opener, timeout=timeout, hint=hint)
        verified = False
        try:
            verify_checksum(archive, md5)
            verified = True
            importer = import_cifar10 if name == "cifar10" else import_tinyimagenet
            return importer(archive, root=base)
        finally:
            if not (keep_archive and verified):   # an archive failing its checksum is never kept
                archive.unlink(missing_ok=True)
    finally:
        _remove_if_empty(downloads)
        if not root_existed:
            _remove_if_empty(base)   # a failed first download leaves no empty root behind


def _remove_if_empty(folder: Path) -> None:
    try:
        folder.rmdir()
    except OSError:
        pass
