"""llama.cpp in-process (llama-cpp-python): the engine of the embedded instruct models, and of any local GGUF.

Why in-process and in order: on a CPU the prompt is most of the cost (~64 tokens/s for the 1.5B model on two
cores), and the prompts of one latent share everything up to the window being judged. The client keeps one
KV cache and evaluates only the tokens after the longest prefix it shares with the previous prompt, so the
queue hands it requests one at a time in the order the stage made them (instructions and explanation first,
the window last). `Response.extra["evaluated_tokens"]` records how many prompt tokens were actually computed.

Chat requests (`Request.messages`) go through the model's own chat template from its GGUF metadata; plain
prompts (base models, and prompts whose own log-probs are wanted) are tokenized as they are. Prompt log-probs
need logits at every position: a second context with `logits_all` is opened the first time they are asked for.

The engine is native code: an instruction the CPU reports but the VM forbids (AMX) kills the process with
SIGILL. `preflight` loads the model and evaluates a few tokens in a child process first, so that case is a
clear error before the run instead of a silent death in the middle of it.
"""
from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from lantern.errors import LanternError
from lantern.llm.base import Capabilities, InProcessClient, Request, Response

REBUILD_HINT = (
    "rebuild llama-cpp-python for a portable CPU level: `bash scripts/install.sh` in lantern's checkout, or "
    "CMAKE_ARGS=\"-DGGML_NATIVE=OFF -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_AMX_TILE=OFF "
    "-DGGML_AMX_INT8=OFF -DGGML_AMX_BF16=OFF\" pip install --no-cache-dir --force-reinstall --no-binary "
    "llama-cpp-python llama-cpp-python")

_PREFLIGHT = """
import sys
from llama_cpp import Llama
llm = Llama(model_path=sys.argv[1], n_ctx=64, n_threads=1, verbose=False)
llm.eval(llm.tokenize(b"Hello, world. The quick brown fox", add_bos=True))
print("ok", llm.n_vocab())
"""


def _import_llama():
    try:
        import llama_cpp
    except ImportError as err:
        raise LanternError(f"the llama.cpp backend needs llama-cpp-python ({err}); {REBUILD_HINT}") from err
    return llama_cpp


def _engine_identity() -> str:
    """Which build of the engine is installed (its shared library's size and mtime), for the preflight marker."""
    llama_cpp = _import_llama()
    lib_dir = Path(llama_cpp.__file__).parent / "lib"
    libs = sorted(lib_dir.glob("*.so*")) + sorted(lib_dir.glob("*.dylib")) + sorted(lib_dir.glob("*.dll"))
    stamp = [(p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in libs]
    return hashlib.sha256(json.dumps([llama_cpp.__version__, stamp]).encode()).hexdigest()[:16]


def preflight(model_path: Path, marker_dir: Path | None = None) -> None:
    """Load the model and evaluate a few tokens in a child process; raise a LanternError saying what to do when
    the engine crashes (SIGILL: an instruction this CPU or VM does not allow) or cannot load the file. Passing
    once is remembered per engine build and model file."""
    from lantern.models.loading import cache_root

    stat = model_path.stat()
    key = hashlib.sha256(f"{_engine_identity()}|{model_path}|{stat.st_size}|{stat.st_mtime_ns}".encode()).hexdigest()
    marker = (marker_dir or cache_root() / "llm") / f"preflight-{key[:20]}.ok"
    if marker.exists():
        return
    try:
        done = subprocess.run([sys.executable, "-c", _PREFLIGHT, str(model_path)], capture_output=True, text=True,
                              errors="replace", timeout=600)
    except subprocess.TimeoutExpired:
        raise LanternError(f"llama.cpp did not load {model_path.name} within 600 s in a test process") from None
    if done.returncode == 0 and done.stdout.startswith("ok"):
        marker.parent.mkdir(parents=True, exist_ok=True)
        marker.write_text(done.stdout)
        return
    tail = (done.stderr or done.stdout).strip().splitlines()[-3:]
    if done.returncode < 0:
        name = signal.Signals(-done.returncode).name
        why = ("it executed an instruction this CPU (or its VM) does not allow, typically AMX or AVX-512 in a "
               "natively built engine" if name == "SIGILL" else "it crashed")
        raise LanternError(f"llama.cpp's engine died with {name} on {model_path.name}: {why}. {REBUILD_HINT}")
    raise LanternError(f"llama.cpp cannot load {model_path}: {' | '.join(tail) or f'exit code {done.returncode}'}")


class LlamaCppClient(InProcessClient):
    """One GGUF model in this process; requests answered one at a time, in order, reusing the KV cache."""

    backend = "llama.cpp"
    capabilities = Capabilities(logprobs=True, prompt_logprobs=True)
    max_batch = 1

    def __init__(self, model_path: str | Path, model_id: str | None = None, n_ctx: int = 8192,
                 n_threads: int | None = None, check: bool = True):
        llama_cpp = _import_llama()
        self.model_path = Path(model_path)
        if not self.model_path.is_file():
            raise LanternError(f"no GGUF file at {self.model_path}")
        if check:
            preflight(self.model_path)
        self.n_threads = n_threads or max(1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
                                          else os.cpu_count() or 1)
        self.llm = llama_cpp.Llama(model_path=str(self.model_path), n_ctx=n_ctx, n_threads=self.n_threads,
                                   n_threads_batch=self.n_threads, n_batch=512, verbose=False)
        self.n_ctx = n_ctx
        self.model_id = model_id or self.model_path.name
        template = self.llm.metadata.get("tokenizer.chat_template")
        self._chat = None
        if template:
            from llama_cpp.llama_chat_format import Jinja2ChatFormatter

            eos = self.llm.detokenize([self.llm.token_eos()], special=True).decode("utf-8", "ignore")
            bos_id = self.llm.token_bos()
            bos = self.llm.detokenize([bos_id], special=True).decode("utf-8", "ignore") if bos_id >= 0 else ""
            self._chat = Jinja2ChatFormatter(template=template, eos_token=eos, bos_token=bos)
        self._full = None  # the logits_all context, opened on the first prompt log-prob request
        self._piece_cache: dict[int, str] = {}
        self.evaluated = 0
        self.sent = 0

    @property
    def chat(self) -> bool:
        """The model has a chat template: requests' `messages` are used."""
        return self._chat is not None

    # --- tokens -------------------------------------------------------------------------------------------
    def piece(self, token: int) -> str:
        text = self._piece_cache.get(token)
        if text is None:
            text = self.llm.detokenize([token]).decode("utf-8", "replace")
            self._piece_cache[token] = text
        return text

    def _tokens(self, request: Request) -> tuple[list[int], tuple[str, ...]]:
        """The prompt's token ids and any extra stop strings the chat template asks for."""
        if request.messages and self._chat is not None and not request.prompt_logprobs:
            # text inside the turns must not become control tokens (`<|im_start|>` in a corpus window)
            formatted = self._chat(messages=[{"role": role, "content": content.replace("<|", "< |")}
                                             for role, content in request.messages])
            stops = formatted.stop if isinstance(formatted.stop, list) else [formatted.stop] if formatted.stop else []
            return self.llm.tokenize(formatted.prompt.encode(), add_bos=False, special=True), tuple(stops)
        return self.llm.tokenize(request.prompt.encode(), add_bos=True, special=False), ()

    def _eval_prefix_reused(self, tokens: list[int]) -> int:
        """Bring the KV cache to `tokens`, computing only what follows the prefix shared with the cache; the last
        position is always recomputed so its logits are fresh. Returns the number of tokens evaluated."""
        cached = self.llm.input_ids[: self.llm.n_tokens].tolist()
        shared = 0
        for a, b in zip(cached, tokens):
            if a != b:
                break
            shared += 1
        shared = min(shared, len(tokens) - 1)
        self.llm.n_tokens = shared
        self.llm.eval(tokens[shared:])
        return len(tokens) - shared

    def _last_logprobs(self) -> np.ndarray:
        """Log-probs of the next token after the last `eval` (without `logits_all`, llama-cpp-python keeps no
        scores: the context's output buffer holds the last position's logits)."""
        logits = np.ctypeslib.as_array(self.llm._ctx.get_logits(), shape=(self.llm.n_vocab(),)).astype(np.float64)
        logits = logits - logits.max()
        return logits - np.log(np.exp(logits).sum())

    def _top(self, logprobs: np.ndarray, k: int) -> dict[str, float]:
        ids = np.argpartition(-logprobs, k)[:k]
        top: dict[str, float] = {}
        for i in ids[np.argsort(-logprobs[ids])]:
            text = self.piece(int(i))
            top[text] = max(top.get(text, -1e9), float(logprobs[i]))
        return top

    # --- answering ----------------------------------------------------------------------------------------
    def complete_now(self, batch: list[Request]) -> list[Response]:
        return [self._answer(r) for r in batch]

    def _answer(self, request: Request) -> Response:
        start = time.perf_counter()
        tokens, template_stops = self._tokens(request)
        if not tokens:
            return Response(text="", error="empty prompt")
        if len(tokens) + request.max_tokens > self.n_ctx:
            return Response(text="", error=f"prompt of {len(tokens)} tokens + {request.max_tokens} to generate "
                                           f"exceeds the context window of {self.n_ctx} tokens",
                            prompt_tokens=len(tokens))
        if request.prompt_logprobs:
            return self._with_prompt_logprobs(request, tokens, start)
        evaluated = self._eval_prefix_reused(tokens)
        self.sent += len(tokens)
        self.evaluated += evaluated
        stops = tuple(request.stop) + template_stops
        rng = np.random.default_rng(request.seed if request.seed is not None else 0)
        first, out_ids, text = None, [], ""
        for step in range(request.max_tokens):
            logprobs = self._last_logprobs()
            if step == 0 and request.top_logprobs:
                first = self._top(logprobs, request.top_logprobs)
            if request.temperature > 0:
                scaled = logprobs / request.temperature
                probs = np.exp(scaled - scaled.max())
                token = int(rng.choice(len(probs), p=probs / probs.sum()))
            else:
                token = int(np.argmax(logprobs))
            if self._ends_turn(token):
                break
            out_ids.append(token)
            text = self.llm.detokenize(out_ids).decode("utf-8", "ignore")
            if any(s and s in text for s in stops):
                break
            if step + 1 < request.max_tokens:
                self.llm.eval([token])
        for s in stops:
            if s and s in text:
                text = text[: text.index(s)]
        return Response(text=text, first_token_logprobs=first, prompt_tokens=len(tokens),
                        completion_tokens=len(out_ids), seconds=time.perf_counter() - start,
                        extra={"evaluated_tokens": evaluated})

    def _ends_turn(self, token: int) -> bool:
        """End of generation: EOS or any end-of-turn token the vocabulary marks (`<|im_end|>`, `<|eot_id|>`, ...),
        which is not always the GGUF's EOS."""
        import llama_cpp

        return token == self.llm.token_eos() or bool(llama_cpp.llama_vocab_is_eog(self.llm._model.vocab, token))

    def _with_prompt_logprobs(self, request: Request, tokens: list[int], start: float) -> Response:
        """Every prompt token's log-prob (from the logits_all context) and the next token's top alternatives."""
        if self._full is None:
            llama_cpp = _import_llama()
            self._full = llama_cpp.Llama(model_path=str(self.model_path), n_ctx=min(self.n_ctx, 2048),
                                         n_threads=self.n_threads, n_threads_batch=self.n_threads, n_batch=512,
                                         logits_all=True, verbose=False)
        full = self._full
        if len(tokens) + 1 > full.n_ctx():
            return Response(text="", error=f"prompt of {len(tokens)} tokens exceeds the {full.n_ctx()}-token context "
                                           f"used for prompt log-probs", prompt_tokens=len(tokens))
        full.reset()
        full.eval(tokens)
        k = max(request.top_logprobs, 1)

        def log_softmax(row: np.ndarray) -> np.ndarray:  # one row at a time: a whole [n, vocab] copy is GBs
            row = row.astype(np.float64)
            row -= row.max()
            return row - np.log(np.exp(row).sum())

        entries = []
        for pos in range(1, len(tokens)):
            row = log_softmax(full.scores[pos - 1])
            entries.append([self.piece(tokens[pos]), float(row[tokens[pos]]), self._top(row, k)])
        last = log_softmax(full.scores[len(tokens) - 1])
        text = self.piece(int(np.argmax(last)))
        self.sent += len(tokens)
        self.evaluated += len(tokens)
        return Response(text=text, first_token_logprobs=self._top(last, k), prompt_tokens=len(tokens),
                        completion_tokens=1, seconds=time.perf_counter() - start,
                        extra={"prompt": entries, "evaluated_tokens": len(tokens)})

    def close(self) -> None:
        for llm in (self._full, getattr(self, "llm", None)):
            if llm is not None:
                llm.close()
        self._full = None
