"""The scripted LLM (faultkit.scripted_answer) behind the fault-injecting server of tests/test_llm_faults.py, as
a process of its own, so a test can kill it with SIGKILL and start it again on the same port:
`python scripted_server.py PORT LOG` prints `ready` once listening and appends one line per call to LOG."""
from __future__ import annotations

import sys
import time

from faultkit import scripted_answer
from test_llm_faults import FaultyServer


def main() -> None:
    port, log_path = int(sys.argv[1]), sys.argv[2]
    log = open(log_path, "a", buffering=1)

    def plan(prompt: str, attempt: int, call: int):
        log.write(f"{'score' if 'Answer yes or no' in prompt else 'explain'}\n")
        return None

    FaultyServer(plan, answer=scripted_answer, port=port)
    print("ready", flush=True)
    while True:
        time.sleep(3600)


if __name__ == "__main__":
    main()
