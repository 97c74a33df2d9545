"""Intervention: does the explanation predict what the latent does to the model's output?

For each latent, its decoder direction is added where the coder writes (explain/output_evidence.write_site),
at a strength calibrated so the next-token KL divergence on neutral prompts hits each target (e.g. 0.5, 1 and
3 nats). The subject model continues each neutral prompt greedily with and without the push. A scorer model
(the LLM, through prompt log-probs) then reads every continuation twice: after the explanation and after a
generic prefix. With Δ(c) = mean log P(c | explanation) − mean log P(c | generic) over the continuation's tokens,
a prompt's score is Δ(steered) − Δ(clean): how much more the explanation raises the likelihood of what the
steered model wrote than of what the clean model wrote (Paulo et al. 2024, intervention scoring). Positive
means the explanation predicts the latent's effect.

Two baselines per latent and target, reported beside the score: a random direction calibrated on its own to
the same target KL and read with the same explanation (an explanation cannot predict it; matching its KL, not
its norm, makes it move the output as much as the latent does, so "random ≈ 0" is not true by construction),
and the latent's own steered text read with another latent's explanation (`shuffled-explanation`). Both should
sit near zero.
"""
from __future__ import annotations

import dataclasses
import random
import zlib
from dataclasses import dataclass

import numpy as np
import torch

from lantern.coders.base import SparseCoder
from lantern.errors import LanternError
from lantern.io import read_json, write_json
from lantern.explain.output_evidence import NEUTRAL_PROMPTS, latent_directions, write_site
from lantern.llm.base import Request, Response
from lantern.score.base import LatentResult, LatentTask, Needs, Plan, ScoreContext, Scorer, example_row
from lantern.score.intervention_steering import Calibration, KLProbe, calibrate, generate_steered
from lantern.score.metrics import mean_interval
from lantern.score.surprisal import prompt_for, text_loss

VARIANTS = ("latent", "random-direction", "shuffled-explanation")
STEERING = "steering"
"""Run-directory folder of the per-latent steering results."""


@dataclass
class Reading:
    """One continuation read after one prefix: the request and where the continuation starts in it."""

    prompt: str
    start: int


@dataclass
class PromptPlan:
    """Everything one neutral prompt contributes for one latent: texts, and the index of each reading."""

    prompt_text: str
    clean_text: str
    steered: dict[float, str]
    random: dict[float, str]
    readings: dict[tuple, int]
    """(what was read, which prefix, target) → index into the plan's requests."""


class InterventionScorer(Scorer):
    name = "intervention"
    headline = "score"
    chance = 0.0
    """An explanation that says nothing about the output raises steered and clean text alike."""

    def __init__(self, settings=None, coders: dict[str, SparseCoder] | None = None):
        super().__init__(settings)
        self.coders = dict(coders or {})
        self._sites: dict[str, object] = {}
        self._probes: dict[str, KLProbe] = {}

    def needs(self) -> Needs:
        return Needs(prompt_logprobs=True, subject_model=True)

    def setup(self, context: ScoreContext) -> None:
        super().setup(context)
        if context.subject is None:
            raise LanternError("the intervention scorer steers the subject model, which is not loaded")
        subject = context.subject
        self.model, self.tokenizer, self.subject_name = subject.model, subject.tokenizer, subject.name
        self.pad_id = self.tokenizer.pad_token_id or 0
        self.prompt_texts = list(NEUTRAL_PROMPTS[:self.settings.intervention_prompts])
        self.prompt_ids = [[subject.bos_id] + self.tokenizer(text, add_special_tokens=False).input_ids
                           for text in self.prompt_texts]
        self._clean: list[str] | None = None

    # --- the subject model's side ---------------------------------------------------------------------------

    def _coder(self, name: str) -> SparseCoder:
        if name not in self.coders:
            from lantern.coders.loading import load_coders

            config = self.context.config
            if config is None:
                raise LanternError(f"the intervention scorer needs coder {name!r} and no run config to load it from")
            for spec in config.coders:
                for coder in load_coders(spec, self.model, config.layer):
                    self.coders.setdefault(coder.name, coder)
            if name not in self.coders:
                raise LanternError(f"coder {name!r} is not among the run's coders ({', '.join(self.coders)})")
        return self.coders[name]

    def _site_and_probe(self, coder: SparseCoder):
        if coder.name not in self._sites:
            site = write_site(self.model, coder)
            self._sites[coder.name] = site
            self._probes[coder.name] = KLProbe(self.model, site.module, site.side, self.prompt_ids, self.pad_id)
        return self._sites[coder.name], self._probes[coder.name]

    def _text(self, ids: list[int]) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=True)

    def _clean_texts(self, site) -> list[str]:
        """The unsteered continuations (the same for every latent: a zero push changes nothing)."""
        if self._clean is None:
            width = self.model.get_input_embeddings().embedding_dim
            outputs = generate_steered(self.model, site.module, site.side, self.prompt_ids, torch.zeros(1, width),
                                       self.settings.intervention_tokens, self.pad_id)
            self._clean = [self._text(rows[0]) for rows in outputs]
        return self._clean

    def _random_unit(self, task: LatentTask, width: int) -> torch.Tensor:
        generator = torch.Generator().manual_seed(zlib.crc32(f"{task.coder}:{task.latent}:{self.context.seed}".encode()))
        vector = torch.randn(width, generator=generator)
        return vector / vector.norm()

    def _shuffled(self, task: LatentTask) -> str | None:
        """Another latent's explanation (same coder first), chosen reproducibly; None when there is none."""
        others = sorted(key for key, text in self.context.explanations.items()
                        if key != (task.coder, task.latent) and text.strip() != task.explanation.strip())
        same = [key for key in others if key[0] == task.coder]
        pool = same or others
        if not pool:
            return None
        return self.context.explanations[random.Random(f"{self.context.seed}:{task.coder}:{task.latent}").choice(pool)]

    # --- planning and reading ---------------------------------------------------------------------------

    def _steer(self, task: LatentTask) -> dict:
        """Calibrate, steer and generate for one latent: the part that does not depend on the explanation.
        Kept per latent in the run directory (`steering/<coder>/<latent>.json`, keyed by every setting that
        shapes it), so scoring again with other explanations (validate's variants, best-of-k, a rerun after a
        kill) reuses it instead of steering again."""
        key = {"targets": list(self.settings.intervention_targets), "prompts": self.prompt_texts,
               "tokens": self.settings.intervention_tokens, "seed": self.context.seed, "model": self.subject_name,
               "random_control": "kl-matched"}
        path = None
        if self.context.config is not None:
            path = self.context.config.path / STEERING / task.coder / f"{task.latent}.json"
            if path.exists():
                saved = read_json(path)
                if saved.get("key") == key:
                    for name in ("calibrations", "random_calibrations"):
                        saved[name] = [Calibration(**c) for c in saved[name]]
                    return saved
        coder = self._coder(task.coder)
        site, probe = self._site_and_probe(coder)
        direction = latent_directions(self.model, coder, [task.latent])[0]
        norm = float(direction.norm())
        if norm == 0:
            return {"error": "the latent's decoder direction is zero"}
        unit = direction / norm
        targets = self.settings.intervention_targets
        calibrations = calibrate(lambda scale: probe.kl(unit * scale), targets)
        random_unit = self._random_unit(task, unit.shape[-1])
        random_calibrations = calibrate(lambda scale: probe.kl(random_unit * scale), targets)
        pushes = torch.stack([unit * c.scale for c in calibrations] +
                             [random_unit * c.scale for c in random_calibrations])
        steered, randoms = [], []
        for rows in generate_steered(self.model, site.module, site.side, self.prompt_ids, pushes,
                                     self.settings.intervention_tokens, self.pad_id):
            texts = [self._text(row) for row in rows]
            steered.append(texts[:len(targets)])
            randoms.append(texts[len(targets):])
        result = {"key": key, "norm": norm, "calibrations": calibrations, "random_calibrations": random_calibrations,
                  "clean": self._clean_texts(site), "steered": steered, "random": randoms}
        if path is not None:
            write_json(path, {**result, "calibrations": [dataclasses.asdict(c) for c in calibrations],
                              "random_calibrations": [dataclasses.asdict(c) for c in random_calibrations]})
        return result

    def plan(self, task: LatentTask) -> Plan:
        steering = self._steer(task)
        if "error" in steering:
            return Plan(task, [], {"error": steering["error"]})
        targets = [c.target_kl for c in steering["calibrations"]]
        shuffled = self._shuffled(task)
        prefixes = {"explanation": task.explanation, "generic": self.settings.surprisal_prefix}
        if shuffled is not None:
            prefixes["shuffled"] = shuffled
        requests: list[Request] = []
        readings: list[Reading] = []
        prompts: list[PromptPlan] = []

        def read(prompt_text: str, continuation: str, prefix: str) -> int:
            text = prompt_text + continuation
            prompt, start = prompt_for(prefixes[prefix], text)
            readings.append(Reading(prompt, start + len(prompt_text)))
            requests.append(Request(prompt=prompt, max_tokens=1, prompt_logprobs=True, stop=()))
            return len(requests) - 1

        for prompt_text, clean_text, steered_texts, random_texts in zip(
                self.prompt_texts, steering["clean"], steering["steered"], steering["random"]):
            steered = dict(zip(targets, steered_texts))
            randoms = dict(zip(targets, random_texts))
            index = {("clean", prefix, None): read(prompt_text, clean_text, prefix) for prefix in prefixes}
            for target in targets:
                for prefix in prefixes:
                    index[("steered", prefix, target)] = read(prompt_text, steered[target], prefix)
                for prefix in ("explanation", "generic"):
                    index[("random", prefix, target)] = read(prompt_text, randoms[target], prefix)
            prompts.append(PromptPlan(prompt_text, clean_text, steered, randoms, index))
        state = {"calibrations": steering["calibrations"],
                 "random_calibrations": {c.target_kl: c for c in steering["random_calibrations"]}, "prompts": prompts,
                 "readings": readings, "shuffled": shuffled, "norm": steering["norm"]}
        return Plan(task, requests, state)

    def evaluate(self, plan: Plan, responses: list[Response]) -> LatentResult:
        state, task = plan.state, plan.task
        nan = float("nan")
        if "error" in state:
            metrics = {"score": nan, "score_ci_low": nan, "score_ci_high": nan, "n": 0, "n_failed": 1,
                       "random_direction_score": nan, "shuffled_explanation_score": nan, "error": state["error"]}
            return LatentResult(metrics, [example_row(task, self.name, None, [], variant="latent", value=None,
                                                      read_as="failed", error_reason=state["error"])], [])
        readings: list[Reading] = state["readings"]
        losses = [text_loss(r.prompt, r.start, response) for r, response in zip(readings, responses)]

        def delta(index: dict, what: str, prefix: str, target) -> float | None:
            """Loss drop of a continuation after `prefix` vs after the generic one (nats per token)."""
            read, generic = losses[index[(what, prefix, target)]], losses[index[(what, "generic", target)]]
            return None if read is None or generic is None else generic[0] - read[0]

        values: dict[str, dict[float, list[float]]] = {v: {c.target_kl: [] for c in state["calibrations"]}
                                                        for v in VARIANTS}
        matched: dict[float, list[float]] = {c.target_kl: [] for c in state["calibrations"]}
        examples = []
        first = state["calibrations"][0].target_kl
        for calibration in state["calibrations"]:
            target = calibration.target_kl
            random_calibration = state["random_calibrations"][target]
            for p in state["prompts"]:
                index = p.readings
                pairs = {"latent": (delta(index, "steered", "explanation", target),
                                    delta(index, "clean", "explanation", None), p.steered[target]),
                         "random-direction": (delta(index, "random", "explanation", target),
                                              delta(index, "clean", "explanation", None), p.random[target])}
                if state["shuffled"] is not None:
                    pairs["shuffled-explanation"] = (delta(index, "steered", "shuffled", target),
                                                     delta(index, "clean", "shuffled", None), p.steered[target])
                for variant, (steered, clean, text) in pairs.items():
                    steering = random_calibration if variant == "random-direction" else calibration
                    # the random control counts only where the latent reached the same KL: its mean is then over
                    # the same targets as the latent's it is compared with
                    reached = steering.reached and (variant != "random-direction" or calibration.reached)
                    failed = steered is None or clean is None or not reached
                    value = None if failed else steered - clean
                    if value is not None:
                        values[variant][target].append(value)
                        if variant == "latent" and random_calibration.reached:
                            matched[target].append(value)
                    used = [responses[i] for key, i in index.items() if _belongs(key, variant, target, first)]
                    reason = None if reached else (
                        f"KL {target} not reached (best {steering.achieved_kl:.3g})" if not steering.reached
                        else f"KL {target} not reached by the latent: no control to compare")
                    examples.append(example_row(
                        task, self.name, None, used, variant=variant, target_kl=target, value=value,
                        read_as="failed" if failed else "prompt-logprobs", scale=steering.scale,
                        achieved_kl=steering.achieved_kl,
                        prompt_text=p.prompt_text, steered_text=text, clean_text=p.clean_text,
                        explanation_used=state["shuffled"] if variant == "shuffled-explanation" else task.explanation,
                        error_reason=reason))
        pooled = {v: np.asarray([x for per_target in values[v].values() for x in per_target], dtype=float)
                  for v in VARIANTS}
        low, high = mean_interval(pooled["latent"], self.settings.bootstrap_resamples, self.context.seed)
        expected = len(state["prompts"]) * len(state["calibrations"])
        metrics = {"score": _mean_of_means(values["latent"]), "score_ci_low": low, "score_ci_high": high,
                   "n": len(pooled["latent"]), "n_failed": expected - len(pooled["latent"]),
                   "random_direction_score": _mean_of_means(values["random-direction"]),
                   "score_where_random_reached": _mean_of_means(matched),
                   "shuffled_explanation_score": _mean_of_means(values["shuffled-explanation"]),
                   "decoder_norm": state["norm"]}
        for calibration in state["calibrations"]:
            t = calibration.target_kl
            metrics[f"score_at_kl_{t:g}"] = _mean(values["latent"][t])
            metrics[f"scale_at_kl_{t:g}"] = calibration.scale
            metrics[f"achieved_kl_{t:g}"] = calibration.achieved_kl
            metrics[f"random_scale_at_kl_{t:g}"] = state["random_calibrations"][t].scale
            metrics[f"random_achieved_kl_{t:g}"] = state["random_calibrations"][t].achieved_kl
        return LatentResult(metrics, examples, [])


def _belongs(key: tuple, variant: str, target: float, first: float) -> bool:
    """Whether a reading is counted in a variant's example at a target. Each reading is counted once: the
    clean continuation's with the first target, the steered text's generic reading with the latent."""
    what, prefix, at = key
    if variant == "random-direction":
        return what == "random" and at == target
    prefixes = ("explanation", "generic") if variant == "latent" else ("shuffled",)
    return prefix in prefixes and ((what == "clean" and target == first) or (what == "steered" and at == target))


def _mean(values: list[float]) -> float:
    return float(np.mean(values)) if values else float("nan")


def _mean_of_means(per_target: dict[float, list[float]]) -> float:
    """Each target weighs the same, whatever number of its prompts could be read."""
    means = [np.mean(v) for v in per_target.values() if v]
    return float(np.mean(means)) if means else float("nan")
