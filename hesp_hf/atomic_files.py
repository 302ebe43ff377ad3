"""Outputs written whole or not at all: into a temporary file (or folder) beside the target, renamed into place on
success."""

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def atomic_output(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path (same folder and suffix as `path`) to write; it replaces `path` only if the block
    succeeds, and is removed otherwise."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=path.suffix)
    os.close(handle)
    os.chmod(temporary, 0o666 & ~_current_umask())  # mkstemp makes 0600 files; outputs get the usual mode
    try:
        yield Path(temporary)
        os.replace(temporary, path)
    finally:
        Path(temporary).unlink(missing_ok=True)


def _current_umask() -> int:
    """The process umask, read without changing it where the system shows it (Linux), since setting it to read it
    would briefly change it for every thread."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def write_text_atomic(path: str | Path, text: str) -> Path:
    """Write `text` to `path`, whole or not at all."""
    with atomic_output(path) as temporary:
        temporary.write_text(text)
    return Path(path)


def check_output_folder(folder: str | Path, option: str) -> None:
    """Refuse a file where an output folder goes (created when missing): one line naming the option, before any
    work is done."""
    if Path(folder).exists() and not Path(folder).is_dir():
        raise ValueError(f"{option} {folder} is a file: give a folder (it is created when missing).")


def check_new_folder(folder: str | Path, what: str = "the export") -> None:
    """Refuse a target folder that exists and is not empty (one clear line, before any work is done)."""
    folder = Path(folder)
    if folder.exists() and (not folder.is_dir() or any(folder.iterdir())):
        raise ValueError(f"{folder} exists and is not an empty folder: choose a new folder for {what}.")


@contextmanager
def atomic_folder(folder: str | Path) -> Iterator[Path]:
    """Yield a temporary folder beside `folder` to fill; it is renamed to `folder` (which must not exist or be empty)
    only if the block succeeds, and removed otherwise."""
    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".{folder.name}."))
    try:
        yield staging
        if folder.exists():
            folder.rmdir()
        staging.rename(folder)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
