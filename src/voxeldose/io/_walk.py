"""The files of a folder and its sub-folders, with nothing skipped in silence.

``Path.rglob`` (Python 3.11) leaves out a sub-folder it may not list, without a word, and does
not enter a symbolic link to a folder. An export's CT or RTSTRUCT in such a sub-folder would be
missing from the case, and a series' end slices in one would be missing from the scan, where no
gap shows. :func:`files_under` lists every file, follows links to folders (a research pipeline
links series in instead of copying them), and refuses what it cannot list or follow.
"""

from __future__ import annotations

import os
from pathlib import Path

from ..errors import InputError, VoxelDoseError

__all__ = ["files_under"]


def files_under(folder: str | os.PathLike[str], error: type[VoxelDoseError] = InputError) -> list[Path]:
    """Every file in ``folder`` and its sub-folders, sorted by path.

    Symbolic links to folders are followed, each folder listed once (a link back up, or a second
    link to a folder already listed, adds nothing). A folder that cannot be listed, or a link
    whose target does not exist, raises ``error`` naming it: either may hide part of the export.
    """
    root = Path(folder)
    files: list[Path] = []
    seen: set[tuple[int, int]] = set()
    pending = [root]
    while pending:
        current = pending.pop()
        try:
            st = current.stat()
            key = (st.st_dev, st.st_ino)
            if key in seen:
                continue
            seen.add(key)
            with os.scandir(current) as it:
                entries = list(it)
        except OSError as exc:
            raise error(f"cannot list the folder {current} ({exc.strerror or exc}): files in it would be left out "
                        "of the case; give read access to it, or move it out of the input") from None
        for entry in entries:
            path = Path(entry.path)
            try:
                if entry.is_dir():  # follows a link to a folder
                    pending.append(path)
                elif entry.is_file():
                    files.append(path)
                elif entry.is_symlink() and not path.exists():
                    raise error(f"{path} is a link to {os.readlink(path)}, which does not exist: a file of the export "
                                "may be missing; copy the export again, or remove the link")
            except OSError as exc:
                raise error(f"{path}: cannot be read ({exc.strerror or exc}); give read access to it, or move it "
                            "out of the input") from None
    return sorted(files)
