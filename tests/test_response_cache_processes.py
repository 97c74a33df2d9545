"""The response cache shared by several worker processes (as Ray workers share the run directory's): every
process's answers are all there afterwards, each intact, while the processes wrote and read at the same time."""
from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

from lantern.llm.base import Request
from lantern.llm.response_cache import ResponseCache, request_key

WRITER = textwrap.dedent("""
    import sys, time
    from lantern.llm.base import Request, Response
    from lantern.llm.response_cache import ResponseCache, request_key

    path, worker, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    cache = ResponseCache(path)  # every process opens (and on first use creates) the same file at once
    seen = 0
    for i in range(n):
        key = request_key("test", "m", Request(prompt=f"prompt {i}", max_tokens=1))
        # workers overlap on half of the prompts, as partitions that share a prompt do
        if i % 2 == 0 or i % 4 == worker:
            cache.put(key, Response(text=f"answer {i}", prompt_tokens=i, completion_tokens=worker))
        got = cache.get(key)
        seen += got is not None
        if got is not None:
            assert got.text == f"answer {i}", got
    cache.close()
    print(seen)
""")


def test_concurrent_processes_share_one_response_cache(tmp_path: Path):
    path, n, workers = tmp_path / "llm_cache.sqlite", 1000, 4
    procs = [subprocess.Popen([sys.executable, "-c", WRITER, str(path), str(w), str(n)], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for w in range(workers)]
    outputs = [p.communicate(timeout=300) for p in procs]
    for worker, (p, (out, err)) in enumerate(zip(procs, outputs)):
        assert p.returncode == 0, err[-2000:]
        own = sum(i % 2 == 0 or i % 4 == worker for i in range(n))
        assert int(out) >= own  # its own answers at least, each read back at once
    cache = ResponseCache(path)
    expected = {i for i in range(n) if i % 2 == 0 or i % 4 < workers}
    assert cache.count() == len(expected)
    for i in range(n):
        got = cache.get(request_key("test", "m", Request(prompt=f"prompt {i}", max_tokens=1)))
        assert got is not None and got.text == f"answer {i}" and got.prompt_tokens == i and got.cached
    assert cache.db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    assert cache.db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    cache.close()
