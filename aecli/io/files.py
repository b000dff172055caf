"""Writing outputs safely: never a half-written file, never a user's input overwritten, one writer."""

from __future__ import annotations

import contextlib
import errno
import functools
import os
import stat
import sys
import tempfile
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

from aecli.errors import OutputError
from aecli.ranks import leader


def _umask() -> int:
    """The process umask, read without setting it: os.umask can only set, and other threads see that."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    return 0o022  # no /proc (macOS, Windows): the usual default


def _fsync_directory(directory: Path) -> None:
    """Make the rename itself durable; without this a crash can bring the old file back."""
    with contextlib.suppress(OSError):  # some filesystems (and Windows) cannot sync a directory
        fd = os.open(directory, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def is_stream(path: Path) -> bool:
    """A device, a pipe or a socket: something that exists and is neither a file nor a directory."""
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return False
    return not (stat.S_ISREG(mode) or stat.S_ISDIR(mode))


@contextmanager
def _in_place(path: Path, mode: str) -> Iterator[IO]:
    try:
        with open(path, mode) as f:
            yield f
    except OSError as e:
        raise OutputError(f"cannot write {path}: {e.strerror or e}") from None


@contextmanager
def atomic_output(path: Path, mode: str = "wb") -> Iterator[IO]:
    """Write to a hidden temporary file beside `path`, fsync, rename over it, fsync the directory.

    Readers see the old file or the whole new one, never a part; on any error, or a kill,
    only the temporary file can be left, and a failed write removes it. As careful tools do,
    an existing file keeps its mode, and a symlink is written through (it stays a link).
    A device or a pipe (`-o /dev/null`, `-o >(gzip > x)`) is written in place: renaming over
    it would swap /dev/null for a plain file, and nothing can be left half-written there.
    """
    path = Path(path)
    if is_stream(path):  # stat follows links; realpath cannot name /dev/fd/63's pipe
        with _in_place(path, mode) as f:
            yield f
        return
    target = real(path)  # a link's (possibly dangling) destination; the temp file must sit beside it
    try:
        if target.is_symlink():
            raise OSError(errno.ELOOP, os.strerror(errno.ELOOP))  # a link loop: refuse it
        try:
            keep = stat.S_IMODE(os.stat(target).st_mode)
        except FileNotFoundError:
            keep = 0o666 & ~_umask()  # mkstemp makes 0600; new outputs get the usual mode
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    except OSError as e:
        raise OutputError(f"cannot write {path}: {e.strerror or e}") from None
    try:
        with os.fdopen(fd, mode) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, keep)
        os.replace(tmp, target)
    except BaseException as e:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(e, OSError):
            raise OutputError(f"cannot write {path}: {e.strerror or e}") from None
        raise
    _fsync_directory(target.parent)


def write_stdout(data: bytes) -> None:
    """All of `data` to stdout, or BrokenPipeError when the reader goes away.

    sys.stdout.buffer.write returns a short count instead of raising when the pipe closes
    mid-write, so a big write to `| head` would look like success; os.write raises.
    """
    try:
        fd = sys.stdout.fileno()
    except (AttributeError, OSError, ValueError):  # a captured stdout (tests, notebooks): no descriptor
        sys.stdout.buffer.write(data)
        return
    sys.stdout.flush()
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def write_bytes_atomic(path: Path, data: bytes) -> None:
    with atomic_output(path) as f:
        f.write(data)


def check_writable(path: Path) -> None:
    """Fail before the work starts, not after it, when an output cannot be written."""
    path = Path(path)
    parent = path.parent if str(path.parent) else Path(".")
    if path.is_dir():
        raise OutputError(f"cannot write {path}: it is a directory")
    if not parent.is_dir():
        raise OutputError(f"cannot write {path}: directory {parent} does not exist")
    if is_stream(path):  # written in place, not renamed into its directory
        if not os.access(path, os.W_OK):
            raise OutputError(f"cannot write {path}: permission denied")
        return
    if not os.access(parent, os.W_OK | os.X_OK):
        raise OutputError(f"cannot write {path}: directory {parent} is not writable")
    if path.exists() and not os.access(path, os.W_OK):
        raise OutputError(f"cannot write {path}: permission denied")


def check_directory(path: Path) -> None:
    """Fail before the work starts when an output directory can be neither found nor made."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise OutputError(f"cannot write into {path}: it is a file")
    existing = path
    while not existing.exists() and existing != existing.parent:  # made with its parents, as mkdir -p
        existing = existing.parent
    if not existing.is_dir():
        raise OutputError(f"cannot write into {path}: {existing} is not a directory")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise OutputError(f"cannot write into {path}: directory {existing} is not writable")


def real(path: Path | str) -> Path:
    """The path with links followed; unlike Path.resolve, a symlink loop is not an error here."""
    return Path(os.path.realpath(path))


def mirror_targets(
    out_dir: Path, relative: list[Path], names: list[str] | None = None, suffix: str = ".png"
) -> list[Path]:
    """Output paths that mirror inputs' relative paths below `out_dir`; two inputs (`names`, for
    the message) never share one."""
    targets, seen = [], {}
    for i, rel in enumerate(relative):
        target = Path(out_dir) / rel.with_suffix(suffix)
        name = names[i] if names else str(rel)
        if target in seen:
            raise OutputError(f"inputs {seen[target]} and {name} would both be written to {target}")
        seen[target] = name
        targets.append(target)
    return targets


def guard_outputs(
    inputs: Iterable[Path],
    input_dirs: Iterable[Path] = (),
    files: Iterable[tuple[str, Path | None]] = (),
    directories: Iterable[tuple[str, Path | None]] = (),
    written: Iterable[tuple[str, Path]] = (),
    hint: str = "choose another path",
) -> None:
    """Before any work: no output file replaces an input or another output, and no output
    directory is an input directory or inside one (what it gets would be read as input next time).

    `files` and `directories` pair each path with the option that named it, for the message;
    `written` are the many files an output directory will get (one per input), which need not
    be told apart from each other. Only an output that exists already can be an input, so the
    inputs are looked at (one stat each, links followed) only then.
    """
    from aecli.data.images import IMAGE_SUFFIXES  # what a directory's walk reads

    input_dirs = list(input_dirs)
    files = [(option, Path(path).expanduser()) for option, path in files if path is not None]
    named: dict[Path, str] = {}
    for option, path in ((o, Path(p).expanduser()) for o, p in directories if p is not None):
        where = real(path)
        if inside := _read_below(where, input_dirs):
            raise OutputError(f"refusing to write into input directory {inside} ({option}; {hint})")
        if where in named:
            raise OutputError(f"{named[where]} and {option} would both write into {path}: give each its own")
        named[where] = option
    for option, path in files:
        if is_stream(path):  # -o /dev/null --index /dev/null is fine
            continue
        where = real(path)
        if where.suffix.lower() in IMAGE_SUFFIXES and (inside := _read_below(where.parent, input_dirs)):
            raise OutputError(f"refusing to write {path} into input directory {inside}: it would be read as an "
                              f"input next time ({option}; {hint})")  # fmt: skip
        if where in named:
            raise OutputError(f"{named[where]} and {option} would both write {path}: give each its own path")
        named[where] = option
    existing: dict[tuple[int, int], tuple[str, Path]] = {}
    for option, path in [*files, *written]:
        with contextlib.suppress(OSError):
            found = os.stat(path)
            if stat.S_ISREG(found.st_mode):
                existing[(found.st_dev, found.st_ino)] = (option, path)
    if not existing:
        return
    for source in inputs:
        try:
            found = os.stat(source)
        except OSError:
            continue
        if (found.st_dev, found.st_ino) in existing:
            option, path = existing[(found.st_dev, found.st_ino)]
            raise OutputError(f"refusing to overwrite input {path} ({option}; {hint})")


def _read_below(folder: Path, input_dirs: list[Path]) -> Path | None:
    """The input directory whose walk would read what `folder` gets (hidden folders are skipped)."""
    for directory in input_dirs:
        if folder == directory or directory in folder.parents:
            if not any(part.startswith(".") for part in folder.relative_to(directory).parts):
                return directory
    return None


def leader_writes(write: Callable[..., Any]) -> Callable[..., Any]:
    """For functions that write a shared output (a file, stdout): under torchrun, rank 0 alone runs them."""

    @functools.wraps(write)
    def on_leader(*args: Any, **kwargs: Any) -> Any:
        return write(*args, **kwargs) if leader() else None

    return on_leader
