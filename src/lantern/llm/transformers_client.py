"""In-process LLM through transformers: batched generation and first-token log-probs, no server needed.

Prompts are tokenized without special tokens and get exactly one BOS, as Gemma needs.
"""
from __future__ import annotations

import time

import torch
from transformers import StoppingCriteria, StoppingCriteriaList

from lantern.llm.base import Capabilities, InProcessClient, Request, Response
from lantern.models.padding import padded


class _StopOnText(StoppingCriteria):
    """Stops each row once its generated text contains a stop string. (transformers' own `stop_strings`
    precomputes a table over the whole vocabulary, which takes minutes for Gemma's 262k tokens.)"""

    def __init__(self, tokenizer, prompt_width: int, stop: tuple[str, ...]):
        self.tokenizer, self.prompt_width, self.stop = tokenizer, prompt_width, stop

    def __call__(self, input_ids: torch.Tensor, scores, **kwargs) -> torch.Tensor:
        texts = self.tokenizer.batch_decode(input_ids[:, self.prompt_width:], skip_special_tokens=True)
        return torch.tensor([any(s in t for s in self.stop) for t in texts], dtype=torch.bool)


class TransformersClient(InProcessClient):
    backend = "transformers"
    capabilities = Capabilities(logprobs=True, prompt_logprobs=True)

    def __init__(self, model: torch.nn.Module, tokenizer, model_id: str, batch_size: int = 8):
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.model_id = model_id
        self.max_batch = batch_size
        self.bos_id = tokenizer.bos_token_id
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0

    def _encode(self, prompt: str) -> list[int]:
        return [self.bos_id] + self.tokenizer(prompt, add_special_tokens=False).input_ids

    def complete_now(self, requests: list[Request]) -> list[Response]:
        """Answer in this thread, in batches of `max_batch` grouped by sampling settings and length."""
        answers: list[Response | None] = [None] * len(requests)
        encoded = [self._encode(r.prompt) for r in requests]
        # Group by sampling settings, then by length, so padding stays small.
        groups: dict[tuple, list[int]] = {}
        for i, r in enumerate(requests):
            groups.setdefault((r.max_tokens, r.temperature, r.stop, r.top_logprobs, r.prompt_logprobs, r.seed),
                              []).append(i)
        for (max_tokens, temperature, stop, top_logprobs, prompt_logprobs, seed), members in groups.items():
            members.sort(key=lambda i: len(encoded[i]))
            for lo in range(0, len(members), self.max_batch):
                batch = members[lo:lo + self.max_batch]
                start = time.perf_counter()
                if seed is not None:
                    torch.manual_seed(seed)
                if max_tokens == 1 or prompt_logprobs:
                    results = self._one_token([encoded[i] for i in batch], top_logprobs, prompt_logprobs)
                else:
                    results = self._generate([encoded[i] for i in batch], max_tokens, temperature, stop, top_logprobs)
                seconds = (time.perf_counter() - start) / len(batch)
                for i, response in zip(batch, results):
                    response.seconds = seconds
                    answers[i] = response
        return [a for a in answers if a is not None]

    def _top(self, logits: torch.Tensor, k: int) -> dict[str, float]:
        return self._tops(torch.log_softmax(logits.float(), dim=-1)[None], k)[0]

    def _tops(self, logprobs: torch.Tensor, k: int) -> list[dict[str, float]]:
        """The k most likely tokens of each row of [n, vocab] log-probs (one topk and one id lookup for all
        rows: per-row calls made echoed prompts cost ~5 ms per token on Gemma's 262k vocabulary)."""
        values, ids = logprobs.topk(k, dim=-1)
        tokens = self.tokenizer.convert_ids_to_tokens(ids.flatten().tolist())
        flat_values = values.flatten().tolist()
        out = []
        for row in range(values.shape[0]):
            top: dict[str, float] = {}
            for token, lp in zip(tokens[row * k:(row + 1) * k], flat_values[row * k:(row + 1) * k]):
                text = token.replace("\u2581", " ")
                top[text] = max(top.get(text, -1e9), lp)
            out.append(top)
        return out

    @torch.inference_mode()
    def _one_token(self, sequences: list[list[int]], top_logprobs: int, prompt_logprobs: bool = False) -> list[Response]:
        """The next token's log-probs in one forward pass (and, if asked, every prompt token's own)."""
        ids, mask = padded(sequences, self.pad_id, "left")
        all_logits = self.model(input_ids=ids, attention_mask=mask, logits_to_keep=0 if prompt_logprobs else 1).logits
        logits = all_logits[:, -1, :]
        responses = []
        for row, (last, seq) in enumerate(zip(logits, sequences)):
            text = self.tokenizer.decode([int(last.argmax())])
            extra = {}
            if prompt_logprobs:
                width = ids.shape[1]
                row_logprobs = torch.log_softmax(all_logits[row, width - len(seq):-1].float(), dim=-1)
                pieces = self.tokenizer.convert_ids_to_tokens(seq[1:])
                own = row_logprobs.gather(1, torch.tensor(seq[1:])[:, None])[:, 0].tolist()
                tops = self._tops(row_logprobs, max(top_logprobs, 1))
                extra["prompt"] = [[piece.replace("\u2581", " "), lp, top]
                                   for piece, lp, top in zip(pieces, own, tops)]
            responses.append(Response(text=text, first_token_logprobs=self._top(last, max(top_logprobs, 1)),
                                      prompt_tokens=len(seq), completion_tokens=1, extra=extra))
        return responses

    @torch.inference_mode()
    def _generate(self, sequences: list[list[int]], max_tokens: int, temperature: float, stop: tuple[str, ...],
                  top_logprobs: int) -> list[Response]:
        ids, mask = padded(sequences, self.pad_id, "left")
        sampling = dict(do_sample=True, temperature=temperature) if temperature > 0 else dict(do_sample=False)
        out = self.model.generate(
            input_ids=ids, attention_mask=mask, max_new_tokens=max_tokens, pad_token_id=self.pad_id,
            stopping_criteria=StoppingCriteriaList([_StopOnText(self.tokenizer, ids.shape[1], stop)]) if stop else None,
            return_dict_in_generate=True,
            output_scores=top_logprobs > 0, top_p=None, top_k=None, **sampling)
        responses = []
        for row in range(len(sequences)):
            new = out.sequences[row, ids.shape[1]:]
            new = new[new != self.pad_id]
            text = self.tokenizer.decode(new, skip_special_tokens=True)
            for s in stop:
                if s in text:
                    text = text[: text.index(s)]
            first = self._top(out.scores[0][row], top_logprobs) if top_logprobs > 0 else None
            responses.append(Response(text=text, first_token_logprobs=first, prompt_tokens=len(sequences[row]),
                                      completion_tokens=int(len(new))))
        return responses
