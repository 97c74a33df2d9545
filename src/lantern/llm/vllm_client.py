"""vLLM's offline engine in-process, for GPU machines (optional extra `vllm`; not installable on CPU-only
machines, so it is not exercised by the test suite here).

vLLM schedules and batches internally, so the queue hands it large batches from one task; sampling
parameters map one to one onto `vllm.SamplingParams`.
"""
from __future__ import annotations

from lantern.errors import LanternError
from lantern.llm.base import Capabilities, InProcessClient, Request, Response, normalise_logprobs


class VLLMClient(InProcessClient):
    backend = "vllm"
    capabilities = Capabilities(logprobs=True, prompt_logprobs=True)

    def __init__(self, model_id: str, batch_size: int = 256, **engine_args):
        try:
            import vllm
        except ImportError as err:
            raise LanternError("the vLLM backend needs `pip install lantern-interp[vllm]` on a GPU machine") from err
        self._vllm = vllm
        self.model_id = model_id
        self.max_batch = batch_size
        self.engine = vllm.LLM(model=model_id, **engine_args)

    def _params(self, r: Request):
        return self._vllm.SamplingParams(
            max_tokens=r.max_tokens, temperature=r.temperature, stop=list(r.stop) or None, seed=r.seed,
            logprobs=r.top_logprobs or None, prompt_logprobs=max(r.top_logprobs, 1) if r.prompt_logprobs else None)

    @staticmethod
    def _top(entry) -> dict[str, float]:
        return normalise_logprobs({lp.decoded_token: lp.logprob for lp in (entry or {}).values()})

    def complete_now(self, batch: list[Request]) -> list[Response]:
        outputs = self.engine.generate([r.prompt for r in batch], [self._params(r) for r in batch], use_tqdm=False)
        responses = []
        for request, output in zip(batch, outputs):
            best = output.outputs[0]
            extra = {}
            if request.prompt_logprobs and output.prompt_logprobs:
                extra["prompt"] = [[lp[tok].decoded_token, lp[tok].logprob, self._top(lp)]
                                   for tok, lp in zip(output.prompt_token_ids[1:], output.prompt_logprobs[1:])]
            first = self._top(best.logprobs[0]) if request.top_logprobs and best.logprobs else None
            responses.append(Response(text=best.text, first_token_logprobs=first,
                                      prompt_tokens=len(output.prompt_token_ids), completion_tokens=len(best.token_ids),
                                      extra=extra))
        return responses
