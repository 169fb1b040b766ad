"""Atomic file writes, write locks and small JSON / safetensors helpers.

Everything the toolkit writes goes through a temporary file in the same directory and a
rename, so an interrupted job never leaves a half-written file behind. Commands that build one
output over a long time (a crafted result, a training run, a comparison) hold `exclusive(path)`
meanwhile, so a second process asked for the same output stops with a clear error instead of
mixing its work with the first's.
"""
from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
import re
import socket
import sys
import tempfile
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Dict, Iterator, Optional

import torch
from safetensors.torch import load_file, save_file

from .errors import DeepslothError

_UMASK = os.umask(0)
os.umask(_UMASK)


@contextmanager
def atomic_path(path: os.PathLike | str, suffix: str = "") -> Iterator[Path]:
    """Yield a temporary path next to `path`; rename it over `path` only on success."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix + ".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.chmod(tmp_path, 0o666 & ~_UMASK)  # mkstemp makes 0600; give files the usual mode
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def write_json(path: os.PathLike | str, obj: Any) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=False) + "\n")


MAX_JSON_BYTES = 16 << 20   # the largest JSON file read_json accepts (the project's own are under 100 KB)
MAX_JSON_DEPTH = 64         # its deepest nesting of objects and lists (the project's own nest at most 12 levels)

# One token of the depth scan: a string (it may hold brackets), or a bracket outside strings. An
# unterminated string matches up to the end of the text (`\\?\Z`), so no match fails and nothing is
# scanned twice: the scan is linear in the size of the text.
_JSON_TOKEN = re.compile(r'"[^"\\]*(?:\\[\s\S][^"\\]*)*(?:"|\\?\Z)|[\[\]{}]')


def _nesting_exceeds(text: str, limit: int) -> bool:
    """Whether the objects and lists of JSON `text` nest deeper than `limit` (strings skipped), before
    the first place a parser would stop: a closing bracket with nothing open, or an unterminated string
    (which runs to the end of the text)."""
    if text.count("[") + text.count("{") <= limit:
        return False
    depth = 0
    for m in _JSON_TOKEN.finditer(text):
        c = m.group()
        if c == "[" or c == "{":
            depth += 1
            if depth > limit:
                return True
        elif c == "]" or c == "}":
            depth -= 1
            if depth < 0:
                return False
    return False


def json_sha256(obj: Any, *, compact: bool = True) -> str:
    """SHA-256 hex digest of the canonical JSON of `obj`: sorted keys, compact separators (`compact=False`:
    json's default separators, the form comparison keys have always been made with)."""
    text = json.dumps(obj, sort_keys=True, separators=(",", ":") if compact else None)
    return hashlib.sha256(text.encode()).hexdigest()


def read_json(path: os.PathLike | str) -> Any:
    """Parse a JSON file, bounded: at most MAX_JSON_BYTES and MAX_JSON_DEPTH levels of nesting.

    Every problem (missing, unreadable, not UTF-8, too large, nested too deep, not JSON) is a one-line
    `DeepslothError` naming the file; nothing here can exhaust the stack or the memory."""
    path = Path(path)
    if not path.is_file():
        raise DeepslothError(f"file not found: {path}")
    def too_large(size: int) -> DeepslothError:
        return DeepslothError(f"{path} is larger than {MAX_JSON_BYTES >> 20} MiB ({size} bytes), the limit for a "
                              f"JSON file deepsloth reads")
    try:
        size = path.stat().st_size
        if size > MAX_JSON_BYTES:
            raise too_large(size)
        with open(path, "rb") as f:
            raw = f.read(MAX_JSON_BYTES + 1)     # bounded also when the file grows meanwhile
        if len(raw) > MAX_JSON_BYTES:
            raise too_large(len(raw))
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise DeepslothError(f"{path} is not valid JSON (not UTF-8 text)") from None
    except OSError as exc:
        raise DeepslothError(f"cannot read {path}: {exc.strerror or exc}") from None
    return parse_json(text, str(path))


def parse_json(text: str, where: str) -> Any:
    """`json.loads(text)`, bounded like `read_json` (MAX_JSON_BYTES characters, MAX_JSON_DEPTH levels):
    for JSON that comes from elsewhere than a file, e.g. a safetensors header's metadata. Errors are one
    line naming `where`."""
    if len(text) > MAX_JSON_BYTES:
        raise DeepslothError(f"{where} is larger than {MAX_JSON_BYTES >> 20} MiB ({len(text)} characters), the "
                             f"limit for JSON deepsloth reads")
    too_deep = DeepslothError(f"{where} is nested more than {MAX_JSON_DEPTH} levels deep (the limit for a JSON "
                              f"file deepsloth reads)")
    if _nesting_exceeds(text, MAX_JSON_DEPTH):
        raise too_deep
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise DeepslothError(f"{where} is not valid JSON ({exc.msg} at line {exc.lineno})") from None
    except RecursionError:   # not reachable past the depth check; kept so that no stack error escapes
        raise too_deep from None
    except ValueError as exc:   # e.g. an integer of more than 4,300 digits
        raise DeepslothError(f"{where} is not valid JSON ({' '.join(str(exc).split())})") from None


def save_tensors(path: os.PathLike | str, tensors: Dict[str, torch.Tensor],
                 metadata: Optional[Dict[str, str]] = None) -> None:
    """Save tensors as safetensors, atomically. Tensors are made contiguous and moved to CPU."""
    flat = {k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}
    with atomic_path(path, suffix=".safetensors") as tmp:
        save_file(flat, str(tmp), metadata=metadata)


def load_tensors(path: os.PathLike | str, device: str | torch.device = "cpu") -> Dict[str, torch.Tensor]:
    """Load a safetensors file (no unpickling involved)."""
    path = Path(path)
    if not path.is_file():
        raise DeepslothError(f"file not found: {path}")
    try:
        return load_file(str(path), device=str(device))
    except Exception as exc:  # safetensors raises its own error types
        raise DeepslothError(f"cannot read {path} as safetensors: {exc}") from None


def read_metadata(path: os.PathLike | str) -> Dict[str, str]:
    """The string metadata of a safetensors file (empty when it has none), without loading its tensors."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            return dict(f.metadata() or {})
    except Exception as exc:   # safetensors raises its own error types
        raise DeepslothError(f"cannot read {path} as safetensors: {exc}") from None


# ---------------------------------------------------------------- write locks

STALE_ELSEWHERE_S = 24 * 3600   # a lock taken on another host is presumed stale after a day
_FRESH_S = 5.0                  # an unreadable lock younger than this may still be being written
_HELD: set = set()              # lock files this process holds now
_HELD_GUARD = threading.Lock()


class LockHeld(DeepslothError):
    """Another live process holds the lock (`exclusive`)."""

    def __init__(self, message: str, lock: Path, holder: Dict[str, Any]):
        super().__init__(message)
        self.lock, self.holder = lock, holder


def _proc_start(pid: int) -> Optional[str]:
    """The start time of process `pid` in clock ticks since boot (Linux), to tell a reused pid."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        return stat.rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def _pid_alive(pid: int) -> bool:
    if os.name == "nt":   # signal 0 is CTRL_C_EVENT there: never send it; assume alive
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:   # alive, owned by someone else
        return True
    except OSError:
        return False
    return True


def _read_lock(lock: Path) -> tuple:
    """(raw bytes, holder dict or None when unreadable); raw is None when the lock is gone.

    A lock is created empty and then filled in, so an unparsable lock younger than a few
    seconds is read again for a moment before it counts as unreadable."""
    deadline = time.monotonic() + 1.0
    while True:
        try:
            raw = lock.read_bytes()
            age = time.time() - lock.stat().st_mtime
        except FileNotFoundError:
            return None, None
        except OSError:
            return b"", None
        try:
            holder = json.loads(raw.decode("utf-8"))
            if isinstance(holder, dict) and isinstance(holder.get("pid"), int):
                return raw, holder
        except (UnicodeDecodeError, ValueError):
            pass
        if age > _FRESH_S or time.monotonic() > deadline:
            return raw, None
        time.sleep(0.05)


def _stale_reason(lock: Path, holder: Optional[Dict[str, Any]]) -> Optional[str]:
    """Why the lock is stale, or None when its holder may still be writing."""
    if holder is None:
        return "its content is unreadable"
    pid = holder["pid"]
    if holder.get("host") != socket.gethostname():
        try:
            age = time.time() - lock.stat().st_mtime
        except OSError:
            return None
        if age > STALE_ELSEWHERE_S:
            return f"taken on {holder.get('host')} more than a day ago"
        return None
    if pid == os.getpid():
        with _HELD_GUARD:
            if str(lock) in _HELD:
                return None
        return f"left by an earlier process with this process's pid {pid}"
    if not _pid_alive(pid):
        return f"process {pid} is no longer running"
    started = holder.get("proc_start")
    if started is not None and _proc_start(pid) not in (None, started):
        return f"process {pid} is no longer running (the pid was reused)"
    return None


def _holder_text(holder: Dict[str, Any]) -> str:
    where = "" if holder.get("host") == socket.gethostname() else f" on {holder.get('host')}"
    return f"pid {holder['pid']}{where}, started {holder.get('started', '?')}"


def _remove_stale(lock: Path, seen: bytes, reason: str) -> None:
    """Delete the stale lock whose content was `seen`, unless it changed meanwhile.

    A short-lived `<lock>.takeover` file makes the check-and-delete atomic among processes
    that all found the same stale lock, so exactly one fresh lock can follow it."""
    guard = Path(f"{lock}.takeover")
    try:
        os.close(os.open(guard, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644))
    except FileExistsError:
        try:
            if time.time() - guard.stat().st_mtime > 30:   # its taker died mid-way
                guard.unlink()
        except OSError:
            pass
        time.sleep(0.05)
        return
    try:
        try:
            if lock.read_bytes() != seen:
                return
            lock.unlink()
        except OSError:   # gone meanwhile, or not ours to remove: the caller looks again
            return
        print(f"deepsloth: note: taking over the stale lock {lock} ({reason})", file=sys.stderr, flush=True)
    finally:
        try:
            guard.unlink()
        except OSError:
            pass


def _acquire(lock: Path, what: str) -> bytes:
    info = {"pid": os.getpid(), "host": socket.gethostname(),
            "started": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "proc_start": _proc_start(os.getpid()), "writing": what, "token": os.urandom(8).hex()}
    mine = (json.dumps(info) + "\n").encode()   # the token tells this holder from any other
    for _ in range(100):
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            raw, holder = _read_lock(lock)
            if raw is None:
                continue   # released meanwhile: try again
            reason = _stale_reason(lock, holder)
            if reason is None:
                raise LockHeld(f"another deepsloth process ({_holder_text(holder)}) is writing {what}; "
                               f"wait for it or remove {lock} if it is stale", lock, holder) from None
            _remove_stale(lock, raw, reason)
            continue
        except OSError as exc:
            raise DeepslothError(f"cannot create the lock file {lock}: {exc.strerror or exc}") from None
        with _HELD_GUARD:   # registered before the pid is readable: other threads see it held
            _HELD.add(str(lock))
        try:
            os.write(fd, mine)
        except OSError as exc:
            os.close(fd)
            _release(lock, b"")
            lock.unlink(missing_ok=True)
            raise DeepslothError(f"cannot write the lock file {lock}: {exc.strerror or exc}") from None
        os.close(fd)
        return mine
    raise DeepslothError(f"could not take the lock {lock}; remove it if no other deepsloth process "
                         f"is writing {what}")


def _release(lock: Path, mine: bytes) -> None:
    try:
        if lock.read_bytes() == mine:   # never remove a lock another process took over
            lock.unlink()
    except OSError:
        pass
    finally:
        with _HELD_GUARD:
            _HELD.discard(str(lock))


@contextmanager
def exclusive(path: os.PathLike | str, what: str) -> Iterator[Path]:
    """Hold the write lock `<path>.lock` for the duration of the block; yields the lock's path.

    The lock is a small JSON file ({pid, host, started}) created with O_CREAT | O_EXCL. When it
    exists already and its process is alive on this host (or it was taken on another host less
    than a day ago), `LockHeld` (a DeepslothError) names the holder; a lock left by a dead
    process, or unreadable, is taken over with a note on stderr. `what` describes the output in
    messages (e.g. the file name). The lock is removed when the block ends, also on an error
    or an interrupt.
    """
    lock = Path(f"{os.fspath(path)}.lock")
    try:
        lock.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DeepslothError(f"cannot create {lock.parent}: {exc.strerror or exc}") from None
    mine = _acquire(lock, what)
    try:
        yield lock
    finally:
        _release(lock, mine)
