"""Atomic writes: the target is either the old file or the complete new one, and no temp file is left."""

from __future__ import annotations

import os
import stat

import numpy as np
import pyarrow.parquet as pq
import pytest

from lantern.io import atomic_path, read_json, write_json, write_npy, write_parquet


class Boom(Exception):
    pass


def test_writes_round_trip_and_leave_only_the_target(tmp_path):
    write_json(tmp_path / "deep" / "a.json", {"b": [1, 2], "a": float("inf"), "path": tmp_path})
    write_npy(tmp_path / "x.npy", np.arange(10, dtype=np.int64))
    write_parquet(tmp_path / "t.parquet", [{"latent": 1, "text": "é"}, {"latent": 2, "text": None}])
    write_parquet(tmp_path / "t.parquet", [{"latent": 3, "text": "new"}])  # replaces an existing file
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["a.json", "deep", "t.parquet", "x.npy"]
    assert read_json(tmp_path / "deep" / "a.json") == {"a": float("inf"), "b": [1, 2], "path": str(tmp_path)}
    np.testing.assert_array_equal(np.load(tmp_path / "x.npy"), np.arange(10))
    assert pq.read_table(tmp_path / "t.parquet").to_pylist() == [{"latent": 3, "text": "new"}]


def test_a_writer_that_raises_half_way_leaves_the_old_file(tmp_path):
    target = tmp_path / "result.bin"
    target.write_bytes(b"old complete content")
    with pytest.raises(Boom):
        with atomic_path(target) as tmp:
            with open(tmp, "wb") as f:
                f.write(b"new but partial")
                f.flush()
                assert tmp.read_bytes() == b"new but partial" and tmp.parent == tmp_path
                raise Boom
    assert target.read_bytes() == b"old complete content"
    assert os.listdir(tmp_path) == ["result.bin"]

    fresh = tmp_path / "never.bin"
    with pytest.raises(Boom):
        with atomic_path(fresh) as tmp:
            tmp.write_bytes(b"partial")
            raise Boom
    assert not fresh.exists() and os.listdir(tmp_path) == ["result.bin"]


def test_library_writers_failing_mid_write(tmp_path):
    write_npy(tmp_path / "a.npy", np.zeros(3))
    write_parquet(tmp_path / "t.parquet", [{"x": 1}])
    # np.save writes the header, then fails pickling the second element: a genuinely partial write.
    unpicklable = np.array([1, lambda: None], dtype=object)
    with pytest.raises(Exception):
        write_npy(tmp_path / "a.npy", unpicklable)
    with pytest.raises(Exception):
        write_parquet(tmp_path / "t.parquet", [{"x": 1}, {"x": "not an int"}])
    np.testing.assert_array_equal(np.load(tmp_path / "a.npy"), np.zeros(3))
    assert pq.read_table(tmp_path / "t.parquet").to_pylist() == [{"x": 1}]
    assert sorted(os.listdir(tmp_path)) == ["a.npy", "t.parquet"]


def test_written_files_get_normal_permissions(tmp_path):
    """A temp file is private (0600); the finished file must be readable like any other file (umask)."""
    plain = tmp_path / "plain.txt"
    plain.write_text("x")
    write_json(tmp_path / "config.json", {"a": 1})
    write_npy(tmp_path / "x.npy", np.zeros(2))
    mode = stat.S_IMODE(plain.stat().st_mode)
    assert stat.S_IMODE((tmp_path / "config.json").stat().st_mode) == mode
    assert stat.S_IMODE((tmp_path / "x.npy").stat().st_mode) == mode
