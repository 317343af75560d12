"""A .npy file that is missing, a directory, empty, text, pickled or not numbers gets one line
naming the file and the problem, in the library and on the command line (no traceback)."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
from click.testing import CliRunner

from mrl_pg.cli._app import cli
from mrl_pg.errors import InvalidVectorError
from mrl_pg.vectors import load_npy


def _cases(tmp_path):
    (tmp_path / "empty.npy").write_bytes(b"")
    (tmp_path / "text.npy").write_text("0.1, 0.2, 0.3\n")
    (tmp_path / "dir.npy").mkdir()
    np.save(tmp_path / "objects.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    np.save(tmp_path / "strings.npy", np.array(["1.0", "2.0"]))
    (tmp_path / "pickled.npy").write_bytes(pickle.dumps([1.0, 2.0]))
    truncated = tmp_path / "truncated.npy"
    np.save(truncated, np.ones(64, dtype=np.float32))
    truncated.write_bytes(truncated.read_bytes()[:100])
    return {
        "missing.npy": "does not exist",
        "dir.npy": "is a directory",
        "empty.npy": "is empty",
        "text.npy": "is not a .npy file",
        "pickled.npy": "is not a .npy file",
        "objects.npy": "holds Python objects, not numbers",
        "strings.npy": "values, not real numbers",
        "truncated.npy": "is not a readable .npy file",
    }


def test_each_bad_file_is_named_with_its_problem(tmp_path):
    for name, problem in _cases(tmp_path).items():
        with pytest.raises(InvalidVectorError) as caught:
            load_npy(tmp_path / name, "query vector file")
        message = str(caught.value)
        assert name in message and problem in message, message
        assert "allow_pickle" not in message  # never advise loading pickles


def test_a_good_file_loads(tmp_path):
    np.save(tmp_path / "ok.npy", np.arange(6, dtype=np.float32).reshape(2, 3))
    assert load_npy(tmp_path / "ok.npy", "rows").shape == (2, 3)


def test_the_cli_prints_one_line_and_exits_1_for_each_bad_file(tmp_path):
    runner = CliRunner()
    for name, problem in _cases(tmp_path).items():
        result = runner.invoke(cli, ["search", "--vector", str(tmp_path / name),
                                     "--dsn", "postgresql://unused"])
        if name in ("missing.npy", "dir.npy"):  # click refuses these before mrl_pg runs
            assert result.exit_code == 2 and "Traceback" not in result.output
            continue
        assert result.exit_code == 1, (name, result.output)
        assert result.output.strip().splitlines() == [result.output.strip()]
        assert problem in result.output and "Traceback" not in result.output
