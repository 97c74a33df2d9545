"""Queue efficiency against a fixed-latency OpenAI-compatible server of capacity C.

The server (127.0.0.1, threads) answers each /v1/completions call after LATENCY seconds and serves at most C
calls at once (more wait for a slot), so the ideal throughput is C / LATENCY calls per second. lantern's
client runs N = 8 * C requests through its queue and response cache with concurrency C; efficiency =
achieved / ideal throughput (goal: >= 0.9 for C = 1..64). The same requests are then sent one latent at a
time, as delphi does (its scorer calls for one latent in flight together, ~41 calls per latent), for contrast.

    python benchmarks/bench_llm_queue.py [--latency 0.2] [--capacities 1,2,4,8,16,32,64]
"""
from __future__ import annotations

import argparse
import json
import multiprocessing
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from lantern.llm.base import Request
from lantern.llm.http_client import HTTPClient
from lantern.llm.response_cache import CachedClient


def serve(latency: float, capacity: int, port_out) -> None:
    """The server runs in its own process, so its threads never compete with the client for the GIL."""
    slots = threading.Semaphore(capacity)

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        disable_nagle_algorithm = True  # headers and body go out as separate writes: no 40 ms delayed-ACK stall

        def do_POST(self):  # noqa: N802
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            with slots:
                time.sleep(latency)
            data = json.dumps({"choices": [{"text": " yes", "logprobs": {"top_logprobs": [{" yes": -0.1, " no": -2.3}]}}],
                               "usage": {"prompt_tokens": len(body["prompt"].split()), "completion_tokens": 1}}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args):
            pass

    class Server(ThreadingHTTPServer):
        request_queue_size = 1024  # listen backlog: the default 5 resets connections when 64 clients connect at once
        daemon_threads = True

    httpd = Server(("127.0.0.1", 0), Handler)
    port_out.put(httpd.server_address[1])
    httpd.serve_forever()


def start_server(latency: float, capacity: int) -> tuple[multiprocessing.Process, str]:
    ports = multiprocessing.Queue()
    process = multiprocessing.Process(target=serve, args=(latency, capacity, ports), daemon=True)
    process.start()
    return process, f"http://127.0.0.1:{ports.get(timeout=30)}/v1"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--latency", type=float, default=0.2)
    parser.add_argument("--capacities", default="1,2,4,8,16,32,64")
    parser.add_argument("--per-latent", type=int, default=41, help="calls per latent in the one-latent-at-a-time arm")
    args = parser.parse_args()
    rows = []
    for capacity in [int(c) for c in args.capacities.split(",")]:
        httpd, url = start_server(args.latency, capacity)
        n = 8 * capacity
        requests = [Request(prompt=f"latent {i // args.per_latent} prompt {i} is it?", max_tokens=1, top_logprobs=2,
                            stop=()) for i in range(n)]
        ideal = n * args.latency / capacity
        with tempfile.TemporaryDirectory() as tmp:
            client = CachedClient(HTTPClient(url, "m", concurrency=capacity, api_key_env="NO_KEY"),
                                  Path(tmp) / "cache.sqlite", concurrency=capacity)
            start = time.perf_counter()
            answers = client.complete(requests)
            queued = time.perf_counter() - start
            assert all(a.ok for a in answers)
            client.close()
        with tempfile.TemporaryDirectory() as tmp:
            client = CachedClient(HTTPClient(url, "m", concurrency=capacity, api_key_env="NO_KEY"),
                                  Path(tmp) / "cache.sqlite", concurrency=capacity)
            start = time.perf_counter()
            for lo in range(0, n, args.per_latent):  # one latent's calls at a time
                client.complete(requests[lo:lo + args.per_latent])
            per_latent = time.perf_counter() - start
            client.close()
        httpd.terminate()
        httpd.join()
        rows.append({"capacity": capacity, "requests": n, "ideal_s": round(ideal, 2), "queue_s": round(queued, 2),
                     "queue_efficiency": round(ideal / queued, 3), "one_latent_at_a_time_s": round(per_latent, 2),
                     "one_latent_at_a_time_efficiency": round(ideal / per_latent, 3)})
        print(json.dumps(rows[-1]), flush=True)
    print("\n| capacity C | requests | ideal (s) | lantern queue (s) | efficiency | one latent at a time (s) | efficiency |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['capacity']} | {r['requests']} | {r['ideal_s']} | {r['queue_s']} | {r['queue_efficiency']:.2f} | "
              f"{r['one_latent_at_a_time_s']} | {r['one_latent_at_a_time_efficiency']:.2f} |")


if __name__ == "__main__":
    main()
