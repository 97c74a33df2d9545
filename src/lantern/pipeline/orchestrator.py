"""The one place that runs the stages in order: `lantern run`, each stage's own command and `lantern validate` all
go through a `Pipeline`, which loads the subject model and the LLM client at most once, times every stage and
closes what it opened."""
from __future__ import annotations

import time
from dataclasses import dataclass, field, replace

from lantern.config import RunConfig
from lantern.configure import apply_llm_options
from lantern.executors.base import Executor
from lantern.executors.local import LocalExecutor
from lantern.llm.base import LLMClient


@dataclass
class Pipeline:
    """One run's stages over a shared subject model and LLM client. `llm_options`: the command's LLM options
    (None: not given), applied to the run's saved LLM settings before the client is built. A `client` or
    `subject` passed in is used as is (and not closed here)."""

    cfg: RunConfig
    executor: Executor = field(default_factory=LocalExecutor)
    llm_options: dict = field(default_factory=dict)
    subject: object | None = None
    client: LLMClient | None = None
    seconds: dict[str, float] = field(default_factory=dict)
    _owns_client: bool = False
    _explainer_client: LLMClient | None = None

    def load_subject(self):
        """The subject model, loaded once (timed as `load model`)."""
        if self.subject is None:
            from lantern.models.loading import load_subject_model

            started = time.perf_counter()
            self.subject = load_subject_model(self.cfg.model)
            self.seconds["load model"] = time.perf_counter() - started
        return self.subject

    def llm(self) -> LLMClient | None:
        """The LLM client for partitions run in this process; None on Ray, whose workers build their own from the
        saved LLM settings (which the command's options update either way)."""
        if self.client is None:
            apply_llm_options(self.cfg, self.llm_options)
            if self.executor.name == "local":
                from lantern.llm.factory import make_client

                self.client = make_client(self.cfg.llm, self.cfg.path, self.subject)
                self._owns_client = True
        return self.client

    def _tokenizer(self):
        return getattr(self.subject, "tokenizer", None)

    def cache(self) -> dict:
        from lantern.pipeline.cache_stage import run_cache

        return self._timed("cache", run_cache(self.cfg, self.load_subject(), executor=self.executor))

    def records(self) -> dict:
        from lantern.pipeline.records_stage import run_records

        return self._timed("records", run_records(self.cfg, executor=self.executor))

    def explain(self) -> dict:
        """Explanations from the run's LLM, or from the explainer's own (`explainer.llm_model`), built here."""
        from lantern.pipeline.explain_stage import run_explain

        cfg, client = self.cfg, None
        if cfg.explainer.llm_model and cfg.explainer.llm_model != cfg.llm.model:
            from lantern.configure import with_llm_options

            cfg = replace(cfg, llm=with_llm_options(cfg.llm, model=cfg.explainer.llm_model))
            if self.executor.name == "local":
                from lantern.llm.factory import make_client

                if self._explainer_client is None:
                    self._explainer_client = make_client(cfg.llm, cfg.path, self.subject)
                client = self._explainer_client
        else:
            client = self.llm()
        return self._timed("explain", run_explain(cfg, client, self._tokenizer(), subject=self.subject,
                                                  executor=self.executor))

    def score(self) -> dict:
        """Scores with the run's scorers; the subject model is loaded first only when a scorer needs it."""
        from lantern.pipeline.score_stage import run_score, scorers_for

        if self.executor.name == "local" and any(s.needs().subject_model for s in scorers_for(self.cfg)):
            self.load_subject()
        client = self.llm()
        return self._timed("score", run_score(self.cfg, client, self._tokenizer(), subject=self.subject,
                                              executor=self.executor))

    def all_stages(self) -> dict[str, float]:
        """cache → records → explain → score; the seconds of each."""
        for stage in (self.cache, self.records, self.explain, self.score):
            stage()
        return self.seconds

    def _timed(self, stage: str, result: dict) -> dict:
        self.seconds[stage] = self.seconds.get(stage, 0.0) + result["seconds"]
        return result

    def release(self) -> None:
        """Close the LLM clients this pipeline made (not a client passed in, not the executor)."""
        if self._owns_client and self.client is not None:
            self.client.close()
            self.client, self._owns_client = None, False
        if self._explainer_client is not None:
            self._explainer_client.close()
            self._explainer_client = None

    def close(self) -> None:
        self.executor.close()
        self.release()

    def __enter__(self) -> "Pipeline":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
