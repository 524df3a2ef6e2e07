"""Files a run writes (checkpoints, the exported policy): replaced atomically, readable by
others, and no temporary file left behind by a writer that was killed.

A writer puts the new content into a temporary file next to the target, named
`.<target>.<pid>.<random>.tmp`, and renames it over the target only when it is complete: the
target is always either the old or the new file. A kill (SIGKILL, power loss) between the two
leaves the temporary file, as large as the target; the next write into the same folder removes
those whose writing process is gone (`remove_stale_temp_files`).
"""

from __future__ import annotations

import os
import re
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

FILE_MODE = 0o644
"""Written files are readable by everyone, as `open()` would create them under the usual umask
(a temporary file is created 0600, which would otherwise stay on the final file)."""

_TEMP_NAME = re.compile(r"^\.(?P<target>.+)\.(?P<pid>\d+)\.[A-Za-z0-9_]+\.tmp$")
# Versions before pid-tagged names wrote `<target>.<random>.tmp` for checkpoints and policies;
# no writer of this version creates such a name, so any of them is left over from a kill.
_UNTAGGED_TEMP_NAME = re.compile(r"^.+\.(pt|onnx)\.[A-Za-z0-9_]{8}\.tmp$")


def error_summary(error: BaseException) -> str:
    """Why a file could not be read, in one line: the error's type and the first line of its
    message (a YAML or protobuf parser's message runs over many lines)."""
    lines = str(error).strip().splitlines()
    return f"{type(error).__name__}: {lines[0]}" if lines else type(error).__name__


def write_atomically(path: str | Path, write: Callable[[BinaryIO], None]) -> Path:
    """Call `write(handle)` on a temporary file in `path`'s folder, fsync it and rename it to
    `path` (mode FILE_MODE); on any error the temporary file is removed and `path` is left as it
    was. Stale temporary files of earlier writes in that folder are removed first."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temp_files(path.parent)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.{os.getpid()}.", suffix=".tmp",
                               dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, FILE_MODE)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def remove_stale_temp_files(folder: str | Path) -> list[Path]:
    """Remove the temporary files in `folder` whose writer no longer runs; returns them.

    A temporary file of a process that is still running (another thread of this one, or a
    second process writing into the same folder) is kept: it may be a write in progress."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    removed = []
    for entry in folder.iterdir():
        match = _TEMP_NAME.match(entry.name)
        stale = (not _process_is_running(int(match["pid"])) if match
                 else bool(_UNTAGGED_TEMP_NAME.match(entry.name)))
        if stale and entry.is_file():
            entry.unlink(missing_ok=True)
            removed.append(entry)
    return removed


def _process_is_running(pid: int) -> bool:
    if pid == os.getpid():
        return True
    if pid <= 0:
        return False  # not a process id (os.kill would signal a process group)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's process
    except (OverflowError, OSError):
        return False
    return True
