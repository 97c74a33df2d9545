"""Partition folders: only partitions renamed into place are merged, in order, by concatenation; a missing one
stops the merge with a clear error instead of giving a short result."""
from __future__ import annotations

import pyarrow.parquet as pq
import pytest

from lantern.errors import LanternError
from lantern.executors import partitions
from lantern.executors.base import ExecutorConfig, make_executor, split_ranges
from lantern.io import write_parquet


def _write(rows):
    def write(folder):
        write_parquet(folder / "out.parquet", rows)
        write_parquet(folder / "usage" / "x.parquet", [{"n": len(rows)}])
        return {"rows": len(rows)}
    return write


def test_merge_concatenates_finished_partitions_in_order(tmp_path):
    partitions.begin(tmp_path, "s")
    # written out of order, one with a column null everywhere (its type is promoted by the merge)
    partitions.write_partition(tmp_path, "s", 1, _write([{"a": 3, "b": "x"}]))
    partitions.write_partition(tmp_path, "s", 0, _write([{"a": 1, "b": None}, {"a": 2, "b": None}]))
    records = partitions.merge(tmp_path, "s", 2, ["out.parquet", "usage/x.parquet", "absent.parquet"])
    assert [r["index"] for r in records] == [0, 1] and [r["rows"] for r in records] == [2, 1]
    assert pq.read_table(tmp_path / "out.parquet").to_pylist() == [
        {"a": 1, "b": None}, {"a": 2, "b": None}, {"a": 3, "b": "x"}]
    assert pq.read_table(tmp_path / "usage" / "x.parquet").column("n").to_pylist() == [2, 1]
    assert not (tmp_path / "absent.parquet").exists()
    partitions.end(tmp_path, "s")
    assert not (tmp_path / "partitions").exists()


def test_a_half_written_partition_is_never_merged(tmp_path):
    partitions.begin(tmp_path, "s")
    partitions.write_partition(tmp_path, "s", 0, _write([{"a": 1}]))

    def dies(folder):  # a worker dying mid-write leaves its staging folder behind
        write_parquet(folder / "out.parquet", [{"a": 99}])
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        partitions.write_partition(tmp_path, "s", 1, dies)
    assert list(partitions.stage_dir(tmp_path, "s").glob(".part-00001.*.partial"))
    with pytest.raises(LanternError, match="part-00001 of 2 did not finish"):
        partitions.merge(tmp_path, "s", 2, ["out.parquet"])
    assert not (tmp_path / "out.parquet").exists()
    # the re-run writes a fresh folder; the dead attempt's rows never appear
    partitions.write_partition(tmp_path, "s", 1, _write([{"a": 2}]))
    partitions.merge(tmp_path, "s", 2, ["out.parquet"])
    assert pq.read_table(tmp_path / "out.parquet").column("a").to_pylist() == [1, 2]


def test_a_partition_already_in_place_is_not_redone(tmp_path):
    partitions.begin(tmp_path, "s")
    first = partitions.write_partition(tmp_path, "s", 0, _write([{"a": 1}]))
    again = partitions.write_partition(tmp_path, "s", 0, lambda folder: pytest.fail("redone"))
    assert again == first


def test_split_ranges_and_executor_choice():
    assert split_ranges(7, 3) == [(0, 2), (2, 4), (4, 7)]
    assert split_ranges(2, 5) == [(0, 1), (1, 2)]
    assert split_ranges(0, 4) == [(0, 0)]
    local = make_executor()
    assert local.name == "local" and local.partitions(100) == 1 and local.partitions(0) == 1
    assert make_executor(ExecutorConfig(partitions=4)).partitions(10) == 4
    with pytest.raises(LanternError, match="unknown executor 'dask'"):
        make_executor(ExecutorConfig(kind="dask"))
