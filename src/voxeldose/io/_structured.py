"""TOML and JSON text from users' files (case files, manifests, label names), parsed safely.

Python's parsers accept what no case file means and fail in ways that are not a clear error: a
deeply nested value raises RecursionError, JSON's ``NaN`` and ``Infinity`` are read as numbers,
and integers of hundreds of digits are read exactly, to overflow later (``float(10**400)``).
:func:`parse` turns each into an :class:`~voxeldose.InputError` naming the file.
"""

from __future__ import annotations

import json
import tomllib
from typing import Any

from ..errors import InputError

__all__ = ["parse", "MAX_DEPTH", "MAX_INTEGER"]

#: Deepest nesting of tables and arrays accepted (a case file needs 3).
MAX_DEPTH = 32

#: Largest integer magnitude accepted: 64-bit signed (numpy's int64; larger cannot be a count,
#: a label value or a number of anything voxeldose reads).
MAX_INTEGER = 2**63 - 1


def parse(text: str, kind: str, where: str) -> Any:
    """The data of TOML (``kind`` "toml") or JSON ("json") ``text``; ``where`` names the file.

    Raises
    ------
    InputError
        Invalid syntax (with line and column), nesting deeper than :data:`MAX_DEPTH`, an integer
        beyond :data:`MAX_INTEGER`, or (JSON) ``NaN``/``Infinity``.
    """
    try:
        if kind == "toml":
            data = tomllib.loads(text)
        else:
            data = json.loads(text, parse_constant=_no_constant, parse_int=_bounded_int)
    except tomllib.TOMLDecodeError as exc:
        raise InputError(f"{where} is not valid TOML: {exc}") from None
    except json.JSONDecodeError as exc:
        raise InputError(f"{where} is not valid JSON: {exc.msg} at line {exc.lineno}, column {exc.colno}") from None
    except RecursionError:
        raise InputError(f"{where}: values nested too deeply to read (more than {MAX_DEPTH} levels)") from None
    except (ValueError, OverflowError) as exc:  # our refusals below, and Python's digit limit for int()
        raise InputError(f"{where}: {exc}") from None
    _check(data, where, 0)
    return data


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a number a JSON case file may hold; write a finite number")


def _bounded_int(text: str) -> int:
    if len(text.lstrip("-")) > 19:
        raise ValueError(f"the integer {text[:24]}{'...' if len(text) > 24 else ''} ({len(text)} digits) is too large")
    return _in_range(int(text))


def _in_range(value: int) -> int:
    if abs(value) > MAX_INTEGER:
        raise ValueError(f"the integer {value} is beyond 64 bits")
    return value


def _check(value: Any, where: str, depth: int) -> None:
    if depth > MAX_DEPTH:
        raise InputError(f"{where}: values nested too deeply to read (more than {MAX_DEPTH} levels)")
    if isinstance(value, dict):
        for item in value.values():
            _check(item, where, depth + 1)
    elif isinstance(value, list):
        for item in value:
            _check(item, where, depth + 1)
    elif isinstance(value, int) and not isinstance(value, bool) and abs(value) > MAX_INTEGER:
        text = str(value)
        raise InputError(f"{where}: the integer {text[:24]}... ({len(text)} digits) is too large")
