"""Guarded, atomic outputs: a reader never sees a half-written output, and no command overwrites its inputs.

* :func:`atomic_write_bytes` / :func:`atomic_directory`: write to a hidden temporary sibling, then rename.
* :func:`guard_output_dir` / :func:`guard_output_file`: the one check every command runs before it writes: the
  output must not equal, contain or lie inside any of the command's inputs, and an existing folder is replaced only
  when it carries :data:`MARKER` (written by the stk-vqa command that made it) or is empty.
* Temporary siblings a killed run left behind (``.NAME.PID.*.tmp``, ``.NAME.PID.*.partial``, ``.NAME.old-PID``) are
  removed by the next write of ``NAME`` once their process is gone.
* :func:`weights_file_problem`: whether a ``.safetensors`` / torch ``.pt`` / ``.json`` file of a model, adapter or
  checkpoint is complete, read without loading any tensors.
* :func:`on_interrupt` / :func:`interrupt_message`: what a command has saved, for the one line Ctrl-C prints.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import struct
import tempfile
import zipfile
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

MARKER = ".stk-vqa-output"
"""File an stk-vqa command writes into every folder it makes; only such a folder is ever replaced."""


class OutputPathError(ValueError):
    """An output path that would overwrite or mix with an input, or replace a folder stk-vqa did not write."""


# ------------------------------------------------------------------------------------------------ interrupts


@contextlib.contextmanager
def on_interrupt(note: Callable[[], str] | str) -> Iterator[None]:
    """If Ctrl-C stops the block, ``note`` (a string, or a function called then) says what was saved; the innermost
    block's note wins. :func:`interrupt_message` reads it from the ``KeyboardInterrupt``."""
    try:
        yield
    except KeyboardInterrupt as interrupt:
        if not getattr(interrupt, "stk_vqa_note", None):
            try:
                interrupt.stk_vqa_note = note() if callable(note) else note
            except Exception as err:  # never let the message itself fail
                interrupt.stk_vqa_note = f"(could not tell what was saved: {err})"
        raise


def interrupt_message(interrupt: BaseException | None = None) -> str:
    """What the command stopped by ``interrupt`` had saved (``nothing was written`` when it said nothing)."""
    return getattr(interrupt, "stk_vqa_note", None) or "nothing was written"


# ------------------------------------------------------------------------------------------------ temp siblings


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True
    return True


def clean_stale_siblings(path: str | os.PathLike) -> list[Path]:
    """Remove ``.NAME.PID.*.tmp`` / ``.partial`` and ``.NAME.old-PID`` siblings of ``path`` whose process is gone."""
    path = Path(path)
    if not path.parent.is_dir():
        return []
    pattern = re.compile(rf"^\.{re.escape(path.name)}\.(?:(\d+)\..*\.(?:tmp|partial)|old-(\d+))$")
    removed = []
    try:
        entries = list(os.scandir(path.parent))
    except OSError:
        return []
    for entry in entries:
        match = pattern.match(entry.name)
        if not match or _pid_alive(int(match[1] or match[2])):
            continue
        with contextlib.suppress(OSError):
            if entry.is_dir(follow_symlinks=False):
                shutil.rmtree(entry.path)
            else:
                os.unlink(entry.path)
            removed.append(Path(entry.path))
    return removed


# ------------------------------------------------------------------------------------------------ guards


def _resolved(path: str | os.PathLike) -> Path:
    return Path(os.path.abspath(os.path.expanduser(os.fspath(path)))).resolve()


def _overlap(output: Path, source: Path) -> str | None:
    if output == source:
        return "is"
    if output in source.parents:
        return "contains"
    if source in output.parents:
        return "lies inside"
    return None


def check_not_input(
    output: str | os.PathLike,
    inputs: Iterable[str | os.PathLike | None] = (),
    containers: Iterable[str | os.PathLike | None] = (),
    what: str = "output",
) -> None:
    """Raise :class:`OutputPathError` if ``output`` equals, contains or lies inside one of ``inputs``, or equals or
    contains one of ``containers`` (inputs an output may be written inside, e.g. ``<adapter>/eval``).

    Paths are compared after resolving symlinks, so a link to an input counts as the input."""
    out = _resolved(output)
    for source, inside_ok in [(s, False) for s in inputs if s] + [(s, True) for s in containers if s]:
        src = _resolved(source)
        relation = _overlap(out, src)
        if relation and not (inside_ok and relation == "lies inside"):
            shown = "is the same as" if relation == "is" else relation
            raise OutputPathError(
                f"{what} {output} {shown} the input {source}; writing there would destroy or mix with the input: "
                "choose another path"
            )


def guard_output_dir(
    path: str | os.PathLike,
    inputs: Iterable[str | os.PathLike | None] = (),
    containers: Iterable[str | os.PathLike | None] = (),
    overwrite: bool = True,
    what: str = "output folder",
    replaceable: Callable[[Path], bool] | None = None,
) -> Path:
    """Check an output folder before a command writes it (see :func:`check_not_input`); returns it as a Path.

    An existing ``path`` needs ``overwrite`` and must be empty or carry :data:`MARKER` (or satisfy ``replaceable``):
    a folder some other tool or a person made is never replaced. Stale temporary siblings are cleaned up."""
    _check_spelling(path, what)
    path = Path(path)
    check_not_input(path, inputs, containers, what)
    if path.exists() or path.is_symlink():
        if not path.is_dir() or path.is_symlink():
            raise OutputPathError(
                f"{what} {path} exists and is not a folder (or is a symbolic link); choose another path"
            )
        if not overwrite:
            raise FileExistsError(f"{path} already exists (pass --overwrite to replace it)")
        if not is_replaceable(path) and not (replaceable and replaceable(path)):
            raise OutputPathError(
                f"{what} {path} exists and was not written by stk-vqa (no {MARKER} file): it is left alone; "
                "remove it yourself or choose another path"
            )
    clean_stale_siblings(path)
    return path


def guard_output_file(
    path: str | os.PathLike,
    inputs: Iterable[str | os.PathLike | None] = (),
    what: str = "output file",
    reserved: re.Pattern | None = None,
) -> Path:
    """Check an output file: not a folder, not one of ``inputs`` (nor a path holding one), and its name not matching
    ``reserved`` (names the command reads as input, e.g. ``*_info.json``)."""
    _check_spelling(path, what)
    path = Path(path)
    if not path.name:
        raise OutputPathError(f"{what} {path!s}: not a file name")
    if path.is_dir():
        raise OutputPathError(f"{what} {path} is a folder; give a file name")
    if reserved is not None and (reserved.match(path.name) or reserved.match(_resolved(path).name)):
        raise OutputPathError(f"{what} {path}: that name is read as input ({reserved.pattern}); choose another name")
    check_not_input(path, (), inputs, what)  # a file may lie inside an input folder, never be or hold an input
    return path


def _check_spelling(path: str | os.PathLike, what: str) -> None:
    text = os.fspath(path)
    if not text.strip():
        raise OutputPathError(f"{what}: empty path")
    if not text.isprintable():
        raise OutputPathError(f"{what} {text!r}: contains control characters (newline, tab, ...)")


def is_replaceable(path: Path) -> bool:
    """An existing folder stk-vqa may replace: it carries :data:`MARKER`, or it is empty."""
    try:
        return (path / MARKER).is_file() or not any(path.iterdir())
    except OSError:
        return False


def write_marker(folder: str | os.PathLike, command: str) -> Path:
    """Mark ``folder`` as written by ``command`` (so a later ``--overwrite`` may replace it); same bytes every run."""
    return atomic_write_json(Path(folder) / MARKER, {"written_by": f"stk-vqa {command}".strip()})


# ------------------------------------------------------------------------------------------------ atomic writes


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` via a temporary file in the same folder and an atomic rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    clean_stale_siblings(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.{os.getpid()}.", suffix=".tmp", dir=path.parent)
    try:
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; give the file normal permissions
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    return path


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike, obj: Any, indent: int | None = 2) -> Path:
    return atomic_write_text(path, json.dumps(obj, indent=indent) + "\n")


@contextlib.contextmanager
def atomic_directory(
    path: str | os.PathLike,
    overwrite: bool = False,
    inputs: Iterable[str | os.PathLike | None] = (),
    containers: Iterable[str | os.PathLike | None] = (),
    command: str = "",
) -> Iterator[Path]:
    """Yield a temporary sibling folder; on success it replaces ``path``, on error it is removed.

    A failed or interrupted run therefore leaves either the previous ``path`` or nothing, never a partial folder.
    ``path`` is checked first with :func:`guard_output_dir` (not an input; an existing folder only with ``overwrite``
    and only if stk-vqa wrote it); the new folder gets :data:`MARKER`.
    """
    path = guard_output_dir(path, inputs, containers, overwrite=overwrite)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.{os.getpid()}.", suffix=".partial", dir=path.parent))
    os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp makes 0700
    kept = f"{path} left as it was" if path.exists() else f"{path} not created"
    try:
        with on_interrupt(f"{kept} (no partial output)"):
            yield tmp
            write_marker(tmp, command or "")
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    old = None
    if path.exists():
        old = path.with_name(f".{path.name}.old-{os.getpid()}")
        os.replace(path, old)
    os.replace(tmp, path)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


# ------------------------------------------------------------------------------------------------ reading


def read_regular_file(path: str | os.PathLike, limit: int) -> bytes:
    """The first ``limit`` + 1 bytes of a regular file; a FIFO, device or folder raises ``OSError`` at once instead of
    blocking or reading forever."""
    import stat

    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise OSError(f"not a regular file: {path}")
        with os.fdopen(fd, "rb", closefd=False) as handle:
            return handle.read(limit + 1)
    finally:
        os.close(fd)


# ------------------------------------------------------------------------------------------------ weights files


def weights_file_problem(path: str | os.PathLike) -> str | None:
    """``None`` if a weights / state file looks complete, else what is wrong (read without loading tensors).

    ``.safetensors``: the header parses and every tensor's bytes lie inside the file. ``.pt`` / ``.pth`` / ``.bin``
    (torch's zip format): the zip directory reads and every member's CRC checks. ``.json``: it parses.
    """
    path = Path(path)
    try:
        size = path.stat().st_size
        if size == 0:
            return f"{path.name} is empty (0 bytes)"
        if path.suffix == ".safetensors":
            with open(path, "rb") as handle:
                head = handle.read(8)
                if len(head) < 8:
                    return f"{path.name} is truncated ({size} bytes)"
                (length,) = struct.unpack("<Q", head)
                if length > size - 8 or length > 100_000_000:
                    return f"{path.name} is truncated or not a safetensors file (header of {length} bytes)"
                header = json.loads(handle.read(length))
            end = max((v["data_offsets"][1] for k, v in header.items() if k != "__metadata__"), default=0)
            if 8 + length + end > size:
                return f"{path.name} is truncated ({size} bytes, its header needs {8 + length + end})"
        elif path.suffix in (".pt", ".pth", ".bin"):
            if not zipfile.is_zipfile(path):
                return None if path.suffix == ".bin" else f"{path.name} is truncated or not a torch file"
            with zipfile.ZipFile(path) as archive:
                bad = archive.testzip()
            if bad is not None:
                return f"{path.name} is corrupt (member {bad})"
        elif path.suffix == ".json":
            json.loads(path.read_text(encoding="utf-8"))
    except (
        OSError,
        ValueError,
        KeyError,
        TypeError,
        AttributeError,
        IndexError,
        struct.error,
        zipfile.BadZipFile,
        RecursionError,
    ) as err:
        return f"{path.name} cannot be read ({type(err).__name__}: {err})"
    return None
