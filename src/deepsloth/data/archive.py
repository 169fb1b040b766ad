"""Uniform read access to a zip file, a tar archive or a folder, with one-line errors.

Importers list member names (always '/'-separated, relative) and read their bytes; they
never care which container the files came in. Every failure mode of the container
(missing, not an archive, corrupt, a member name held twice, a member unpacking to more than
MAX_MEMBER_BYTES) becomes a `DeepslothError` naming the file.
"""
from __future__ import annotations

import os
import tarfile
import zipfile
import zlib
from pathlib import Path
from typing import Dict, Iterable, Iterator, List, Tuple

from ..errors import DeepslothError

_CORRUPT = (zipfile.BadZipFile, zlib.error, EOFError, tarfile.TarError)


MAX_MEMBER_BYTES = 256 << 20   # the most any member may unpack to (a canonical CIFAR batch is 31 MB)


def _duplicated(path: Path, name: str, kind: str) -> DeepslothError:
    return DeepslothError(f"{path} holds the member {name} twice (a duplicated name in a {kind} archive is "
                          f"ambiguous: refusing the archive)")


class Archive:
    """Base class: `names()` lists files, `size(name)` is what a member unpacks to, `read_many(names)`
    yields (name, bytes). A member name occurs once: archives holding a name twice are refused."""

    def __init__(self, path: Path):
        self.path = path

    def names(self) -> List[str]:
        raise NotImplementedError

    def size(self, name: str) -> int:
        """The number of bytes `read(name)` returns, from the archive's directory (nothing is read)."""
        raise NotImplementedError

    def read(self, name: str) -> bytes:
        raise NotImplementedError

    def _check_size(self, name: str) -> None:
        size = self.size(name)
        if size > MAX_MEMBER_BYTES:
            raise DeepslothError(f"{self.path}: member {name} unpacks to {size} bytes, more than the "
                                 f"{MAX_MEMBER_BYTES} a dataset file can take")

    def read_many(self, names: Iterable[str]) -> Iterator[Tuple[str, bytes]]:
        for name in names:
            yield name, self.read(name)

    def close(self) -> None:
        pass

    def __enter__(self) -> "Archive":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _corrupt(self, name: str, exc: BaseException) -> DeepslothError:
        return DeepslothError(f"{self.path} is corrupt: cannot read {name} ({exc})")


class ZipArchive(Archive):
    def __init__(self, path: Path):
        super().__init__(path)
        try:
            self._zip = zipfile.ZipFile(path)
        except _CORRUPT + (OSError,) as exc:
            raise DeepslothError(f"{path} is not a readable zip archive ({exc})") from None
        self._infos: Dict[str, zipfile.ZipInfo] = {}
        for info in self._zip.infolist():
            if info.is_dir():
                continue
            if info.filename in self._infos:   # zipfile itself would silently read the last copy
                self._zip.close()
                raise _duplicated(path, info.filename, "zip")
            self._infos[info.filename] = info

    def names(self) -> List[str]:
        return list(self._infos)

    def size(self, name: str) -> int:
        return int(self._infos[name].file_size)

    def read(self, name: str) -> bytes:
        self._check_size(name)
        try:
            return self._zip.read(self._infos[name])
        except _CORRUPT + (OSError, NotImplementedError) as exc:
            raise self._corrupt(name, exc) from None

    def read_many(self, names: Iterable[str]) -> Iterator[Tuple[str, bytes]]:
        # Read in the order the members are stored: sequential disk access.
        for name in sorted(names, key=lambda n: self._infos[n].header_offset):
            yield name, self.read(name)

    def close(self) -> None:
        self._zip.close()


def _strip_dot(name: str) -> str:
    while name.startswith("./"):
        name = name[2:]
    return name


class TarArchive(Archive):
    def __init__(self, path: Path):
        super().__init__(path)
        try:
            self._tar = tarfile.open(path, "r:*")
            members = [m for m in self._tar.getmembers() if m.isfile()]
        except _CORRUPT + (OSError,) as exc:
            raise DeepslothError(f"{path} is not a readable tar archive ({exc})") from None
        self._members: Dict[str, tarfile.TarInfo] = {}
        self._order: Dict[str, int] = {}
        for i, m in enumerate(members):
            name = _strip_dot(m.name)
            if name in self._members:          # `tar -x` would let the last copy win
                self._tar.close()
                raise _duplicated(path, name, "tar")
            self._members[name], self._order[name] = m, i

    def names(self) -> List[str]:
        return list(self._members)

    def size(self, name: str) -> int:
        return int(self._members[name].size)

    def read(self, name: str) -> bytes:
        self._check_size(name)
        try:
            f = self._tar.extractfile(self._members[name])
            assert f is not None
            return f.read()
        except _CORRUPT + (OSError,) as exc:
            raise self._corrupt(name, exc) from None

    def read_many(self, names: Iterable[str]) -> Iterator[Tuple[str, bytes]]:
        # A compressed tar is a stream: reading in member order avoids rewinding.
        for name in sorted(names, key=lambda n: self._order[n]):
            yield name, self.read(name)

    def close(self) -> None:
        self._tar.close()


class FolderArchive(Archive):
    def __init__(self, path: Path):
        super().__init__(path)
        files: Dict[str, Path] = {}
        for dirpath, dirnames, filenames in os.walk(path, followlinks=True):
            dirnames.sort()
            for fn in sorted(filenames):
                full = Path(dirpath) / fn
                files[full.relative_to(path).as_posix()] = full
        self._files = files

    def names(self) -> List[str]:
        return list(self._files)

    def size(self, name: str) -> int:
        try:
            return self._files[name].stat().st_size
        except OSError as exc:
            raise DeepslothError(f"cannot read {self._files[name]}: {exc.strerror or exc}") from None

    def read(self, name: str) -> bytes:
        self._check_size(name)
        try:
            return self._files[name].read_bytes()
        except OSError as exc:
            raise DeepslothError(f"cannot read {self._files[name]}: {exc.strerror or exc}") from None


def open_archive(path: os.PathLike | str) -> Archive:
    """Open a folder, zip or tar(.gz/.bz2/.xz) file; anything else is a one-line error."""
    p = Path(path).expanduser()
    if not p.exists():
        raise DeepslothError(f"file not found: {p}")
    if p.is_dir():
        return FolderArchive(p)
    if not p.is_file():   # a FIFO or device would block or never end
        raise DeepslothError(f"{p} is not a regular file, a zip or tar archive or a folder")
    try:
        with open(p, "rb") as f:
            head = f.read(8)
    except OSError as exc:
        raise DeepslothError(f"cannot read {p}: {exc.strerror or exc}") from None
    if zipfile.is_zipfile(p):
        return ZipArchive(p)
    if head.startswith(b"PK") or p.suffix.lower() == ".zip":
        raise DeepslothError(f"{p} is a corrupt or truncated zip archive")
    try:
        is_tar = tarfile.is_tarfile(p)
    except (OSError, EOFError, tarfile.TarError, zlib.error):
        is_tar = False
    if is_tar:
        return TarArchive(p)
    if head[:2] == b"\x1f\x8b" or p.name.lower().endswith((".tar", ".tar.gz", ".tgz")):
        raise DeepslothError(f"{p} is a corrupt or truncated tar archive")
    raise DeepslothError(f"{p} is not a zip archive, tar archive or folder")


def file_fingerprint(path: Path) -> dict:
    """Name, size and SHA-256 of a source file, recorded in meta.json for provenance."""
    import hashlib
    if path.is_dir():
        return {"name": path.name, "kind": "folder"}
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return {"name": path.name, "bytes": path.stat().st_size, "sha256": h.hexdigest()}
