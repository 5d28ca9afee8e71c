"""Case files in: the TOML or JSON file of one case (schema: :mod:`voxeldose.case`)."""

from __future__ import annotations

import os
from pathlib import Path

from ..case import Case, case_from_dict
from ..errors import InputError
from ._structured import parse

__all__ = ["load_case"]


def load_case(path: str | os.PathLike[str]) -> Case:
    """Read a case file (TOML or JSON, by its suffix); the schema is in :mod:`voxeldose.case`.

    Parameters
    ----------
    path : str or path-like
        A ``.toml`` or ``.json`` file.

    Returns
    -------
    Case
        With ``source_path`` set, so that provenance can name the file and key of each value.

    Raises
    ------
    InputError
        If the file is missing or unreadable, is not valid TOML/JSON, has an unknown key (the
        message lists the allowed keys), misses ``case_id``, or has a value of the wrong type
        or range (the message names the key and the file).

    Example
    -------
    >>> import pathlib, tempfile
    >>> p = pathlib.Path(tempfile.mkdtemp()) / "case.toml"
    >>> _ = p.write_text('case_id = "c1"\\nadministered_gbq = 2.5\\n[vois]\\nliver = "whole_liver"\\n')
    >>> load_case(p).administered_gbq
    2.5
    """
    p = Path(path)
    suffix = p.suffix.lower()
    if suffix not in (".toml", ".json"):
        raise InputError(f"case file {p}: the name must end in .toml or .json, got {p.suffix or 'no suffix'!r}")
    try:
        raw = p.read_bytes()
    except FileNotFoundError:
        raise InputError(f"case file {p} not found") from None
    except OSError as exc:
        raise InputError(f"case file {p} cannot be read: {exc}") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InputError(f"case file {p} is not UTF-8 text: {exc}") from None
    data = parse(text, suffix[1:], f"case file {p}")
    return case_from_dict(data, source=str(p))
