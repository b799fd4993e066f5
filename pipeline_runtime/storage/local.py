"""`file://` store: a local (or mounted) folder, no cloud needed.

Atomicity comes from writing a temporary file in the target folder and then
renaming it (replace) or hard-linking it (create-only: link(2) fails when the
name exists, so of two racing creators on one host exactly one wins).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import mmap
import os
import stat
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path
from urllib.parse import unquote, urlparse

from .base import NotFound, OutsideStore, PreconditionFailed, StoreMisconfigured, TransientStoreError, check_path

DIRECT_BYTES = 1 << 20
"""A durable put at least this large bypasses the page cache (see `_write`)."""
_BLOCK = 4096
"""O_DIRECT wants buffer, offset and length aligned to the device's block (512 or 4096)."""
_BOUNCE_BYTES = 4 << 20


class FileStore:
    """Objects are files under a root folder; `durable` (fsync) makes commits survive a host crash."""

    local_puts = True
    """base.local_puts: a put is a few syscalls, not a request."""

    def __init__(self, uri: str, *, durable: bool = True) -> None:
        parsed = urlparse(uri)
        if parsed.scheme != "file" or parsed.netloc not in ("", "localhost"):
            raise ValueError(f"not a file:// URI: {uri!r} (use file:///absolute/path)")
        self.uri = uri
        self.root = Path(unquote(parsed.path))
        self.durable = durable
        self._named: set[Path] = set()
        """Folders whose own name in their parent this store has fsynced (see `put`)."""

    def _path(self, path: str) -> Path:
        target = self.root / check_path(path)
        self._inside(target.parent)
        return target

    def _inside(self, folder: Path) -> None:
        """Refuse a folder reached through a symlink: a cleanup must never delete outside the store.

        Only the part below the root is checked: the root itself may sit behind a link.
        """
        rel = os.path.relpath(folder, self.root)
        parts = [] if rel == "." else rel.split(os.sep)
        if ".." in parts:  # not below the root at all (store paths cannot say "..": check_path)
            raise OutsideStore(f"{folder} is outside the store {self.uri}")
        # One lstat per folder below the root, not a realpath of the whole path (which also
        # resolves every folder above the root, on every put: 9 syscalls, each a chance for
        # a busy step thread to keep the GIL from the commit thread).
        at = str(self.root)
        for part in parts:
            at = os.path.join(at, part)
            try:
                mode = os.lstat(at).st_mode
            except (FileNotFoundError, NotADirectoryError):
                return  # nothing below a missing folder exists yet, so nothing there can lead out
            if stat.S_ISLNK(mode):
                raise OutsideStore(f"{folder} leads out of the store {self.uri} (a symlink): refusing to use it")

    def put(self, path: str, data: bytes | memoryview, *, if_absent: bool = False) -> None:
        target = self._path(path)
        try:
            fd, tmp, made = self._temp_beside(target)
            try:
                try:
                    _write(fd, data, self.durable)
                finally:
                    os.close(fd)
                if if_absent:
                    try:
                        os.link(tmp, target)
                    except FileExistsError:
                        raise PreconditionFailed(path) from None
                else:
                    os.replace(tmp, target)
                    tmp = ""
            finally:
                if tmp:
                    os.unlink(tmp)
            if self.durable:
                self._make_name_durable(target, made)
        except OSError as e:
            raise _os_error(e, path) from e

    def _make_name_durable(self, target: Path, made: list[Path]) -> None:
        """POSIX: a new name is durable once the folder holding it is fsynced (after the file
        itself), and a folder's own name once its parent is.

        So fsync the target's folder, then each folder up to the root whose name this store
        has not made durable yet. Which ones this store has, it remembers (a folder once
        synced into its parent stays so): a commit's artifacts, each in its own new `ab/`
        folder, cost one extra fsync of `artifacts/` each, not one of every folder up to the
        root (bench_checkpoint.py [1]: 16 arrays, 0.1 GiB). A folder is remembered only after
        its parent's fsync returned, so a put racing another never returns on the strength of
        a sync still in flight. The folders this put made (`made`) are new whatever it remembers:
        a cleanup may have taken them away since."""
        _sync_folder(target.parent)
        folder = target.parent
        while folder != self.root and self.root in folder.parents and (folder in made or folder not in self._named):
            _sync_folder(folder.parent)
            self._named.add(folder)
            folder = folder.parent

    def _temp_beside(self, target: Path) -> tuple[int, str, list[Path]]:
        """A temporary file in the target's folder, made if needed.

        `delete` removes folders it empties; one may vanish between our mkdir and the
        mkstemp (a cleanup racing this write), so try again. Once the temporary file is
        in it, the folder is not empty and stays. Also returns the folders that were
        missing (their names are new)."""
        missing: list[Path] = []
        for attempt in range(10):
            folder = target.parent
            while not folder.is_dir():
                missing.append(folder)
                folder = folder.parent
            if missing:
                target.parent.mkdir(parents=True, exist_ok=True)
            try:
                return (*tempfile.mkstemp(dir=target.parent, prefix=".tmp-"), missing)
            except FileNotFoundError:
                if attempt == 9:
                    raise
        raise AssertionError("unreachable")

    def get(self, path: str) -> bytes:
        try:
            return self._path(path).read_bytes()
        except (FileNotFoundError, IsADirectoryError):  # a folder is no object, as in an object store
            raise NotFound(path) from None
        except OSError as e:
            raise _os_error(e, path) from e

    def get_into(self, path: str, allocate: Callable[[int], memoryview]) -> int:
        """base.ReadsInto: read(2) straight into the caller's buffer. Into a numpy array this beats
        `read_bytes()` by a third: the bytes object's fresh pages fault in one by one (and
        are trimmed by a realloc at the end), an array's are huge pages."""
        try:
            fd = os.open(self._path(path), os.O_RDONLY | os.O_CLOEXEC)
        except (FileNotFoundError, IsADirectoryError):
            raise NotFound(path) from None
        except OSError as e:
            raise _os_error(e, path) from e
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):  # a folder is no object, as in an object store
                raise NotFound(path)
            size = st.st_size
            view = allocate(size).cast("B")
            done = 0
            while done < size:  # one read(2) returns at most ~2 GiB
                n = os.readv(fd, [view[done:]])
                if n == 0:
                    break  # shorter than it was a moment ago: the caller calls it damaged
                done += n
            return done
        except OSError as e:
            raise _os_error(e, path) from e
        finally:
            os.close(fd)

    def exists(self, path: str) -> bool:
        return self._path(path).is_file()

    def list(self, prefix: str) -> list[str]:
        # Walk only the deepest folder the prefix names, not the whole store.
        base = prefix.rsplit("/", 1)[0] if "/" in prefix else ""
        start = self.root / base if base else self.root
        if not start.is_dir():
            return []
        self._inside(start)  # os.walk would follow a symlinked start folder
        found = []
        for dirpath, _dirs, files in os.walk(start):
            rel_dir = os.path.relpath(dirpath, self.root)
            for name in files:
                if name.startswith(".tmp-"):
                    continue
                rel = name if rel_dir == "." else f"{rel_dir}/{name}"
                if rel.startswith(prefix):
                    found.append(rel)
        return sorted(found)

    def remove_temporaries(self, prefix: str = "", recursive: bool = True) -> int:
        """Delete the temporary files that writes killed mid-way (SIGKILL) left in the
        folder `prefix` names (and below it, if `recursive`); only for a caller that owns
        that folder and whose other writers are fenced (an output step finishing, a run's
        own work folder)."""
        start = self.root / prefix if prefix else self.root
        if not start.is_dir():
            return 0
        self._inside(start)
        removed = 0
        for dirpath, _dirs, files in os.walk(start):
            for name in files:
                if name.startswith(".tmp-"):
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(os.path.join(dirpath, name))
                        removed += 1
            if not recursive:
                break
        return removed

    def tidy(self, prefix: str, *, recursive: bool = True) -> None:
        """base.Tidy: the temporaries of killed writes under `prefix`; with `recursive`, also
        every folder under it left empty, the prefix folder and its empty parents (an object
        store has no folders to leave behind)."""
        self.remove_temporaries(prefix, recursive)
        if not recursive:
            return
        top = self.root / prefix if prefix else self.root
        if top.is_dir():
            for folder, _, _ in sorted(os.walk(top), key=lambda w: -len(w[0])):
                with contextlib.suppress(OSError):
                    os.rmdir(folder)
        for parent in Path(prefix).parents:
            if str(parent) != ".":
                with contextlib.suppress(OSError):
                    os.rmdir(self.root / parent)

    def delete(self, path: str) -> None:
        target = self._path(path)
        try:
            target.unlink()
        except FileNotFoundError:
            return
        # Object stores have no folders: take away the ones this leaves empty (artifacts/ab/),
        # up to the root. rmdir refuses a folder that is not empty, so a racing writer is safe.
        for folder in target.parents:
            if folder == self.root or self.root not in folder.parents:
                break
            try:
                folder.rmdir()
            except OSError:
                break


def _os_error(e: OSError, path: str) -> Exception:
    # A full or read-only disk will not heal by retrying in this pod, but the next
    # attempt may land elsewhere: report it as transient infrastructure.
    if e.errno in (errno.ENOSPC, errno.EROFS, errno.EIO, errno.EDQUOT):
        return TransientStoreError(f"{path}: {e.strerror}")
    if e.errno in (
        errno.ENOTDIR,
        errno.EISDIR,
        errno.EACCES,
        errno.EPERM,
        errno.ENAMETOOLONG,
        errno.ENOENT,
        errno.ELOOP,
    ):
        return StoreMisconfigured(
            f"{e.filename or path}: {e.strerror}: fix the file:// checkpoint URI or the folder's permissions"
        )
    return e


def _sync_folder(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


_bounce = threading.local()


def _write(fd: int, data: bytes | memoryview, durable: bool) -> None:
    """Write `data` to the new file `fd` (fsynced if `durable`).

    A durable write of an artifact goes around the page cache (O_DIRECT, through a small
    aligned buffer each thread reuses). An artifact is written once and read back only by a
    resume, nearly always in another pod on another node. Through the page cache, every
    commit took as much fresh memory as it wrote (charged to the pod's memory cgroup, like
    any page cache) and copied its bytes into it: on this VM a 10-step pipeline of 100 MB
    steps spent 1.2 s of CPU in that copy, into pages the host had to hand over first
    (docs/checkpoints.md). A folder whose filesystem refuses O_DIRECT (tmpfs before Linux
    6.6, some FUSE mounts) gets the ordinary write, and the fsynced pages are dropped.
    """
    view = memoryview(data).cast("B")
    size = len(view)
    done = 0
    if durable and size >= DIRECT_BYTES:
        done = _write_direct(fd, view, size - size % _BLOCK)
    while done < size:
        done += os.write(fd, view[done:])
    if durable:
        os.fsync(fd)
        if size >= DIRECT_BYTES:
            with contextlib.suppress(OSError, AttributeError):  # advice only; not on every platform
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)


def _write_direct(fd: int, view: memoryview, length: int) -> int:
    """Write the first `length` (block-aligned) bytes with O_DIRECT; how many it wrote (0 when
    the filesystem refuses). O_DIRECT is off again on return, for the caller's tail."""
    flags = fcntl.fcntl(fd, fcntl.F_GETFL)
    try:
        fcntl.fcntl(fd, fcntl.F_SETFL, flags | os.O_DIRECT)
    except (OSError, AttributeError):
        return 0
    done = 0
    try:
        buffer = getattr(_bounce, "buffer", None)
        if buffer is None:
            buffer = _bounce.buffer = mmap.mmap(-1, _BOUNCE_BYTES)  # page-aligned, reused
        bounce = memoryview(buffer)
        while done < length:
            n = min(_BOUNCE_BYTES, length - done)
            bounce[:n] = view[done : done + n]
            try:
                wrote = os.write(fd, bounce[:n])
            except OSError as e:
                if e.errno == errno.EINVAL and done == 0:
                    return 0  # the filesystem takes no O_DIRECT after all: all of it buffered
                raise
            done += wrote
            if wrote < n:  # short: the offset may be unaligned now, the caller finishes buffered
                break
        return done
    finally:
        fcntl.fcntl(fd, fcntl.F_SETFL, flags)
