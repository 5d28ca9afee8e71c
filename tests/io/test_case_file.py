"""The case-file reader: TOML and JSON files in, clear errors for files it cannot read."""

from __future__ import annotations

import pytest

from voxeldose.errors import InputError
from voxeldose.io.case_file import load_case


def _write(tmp_path, text, name="case.toml", encoding="utf-8"):
    p = tmp_path / name
    p.write_bytes(text.encode(encoding))
    return p


def test_file_level_errors(tmp_path):
    with pytest.raises(InputError, match="not found"):
        load_case(tmp_path / "nope.toml")
    with pytest.raises(InputError, match=r"\.toml or \.json"):
        load_case(_write(tmp_path, "case_id = 'c'", "case.yaml"))
    with pytest.raises(InputError, match="not valid TOML"):
        load_case(_write(tmp_path, "case_id = \n"))
    with pytest.raises(InputError, match="not valid JSON.*line 1"):
        load_case(_write(tmp_path, "{case_id: 1}", "c.json"))
    with pytest.raises(InputError, match="not UTF-8"):
        load_case(_write(tmp_path, 'case_id = "caf\u00e9"\n', encoding="latin-1"))
    (tmp_path / "folder.toml").mkdir()
    with pytest.raises(InputError, match="cannot be read"):
        load_case(tmp_path / "folder.toml")  # a folder named like a case file


def test_json_and_toml_give_the_same_case(tmp_path):
    toml = load_case(_write(tmp_path, 'case_id = "c1"\nadministered_gbq = 2.5\n[vois]\nliver = "whole_liver"\n'))
    json_ = load_case(_write(tmp_path, '{"case_id": "c1", "administered_gbq": 2.5, "vois": {"liver": "whole_liver"}}',
                             "case.json"))
    assert toml == json_ and toml.source_path.endswith("case.toml") and json_.source_path.endswith("case.json")
