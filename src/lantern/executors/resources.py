"""What a partition needs that is costly to build (the subject model, its tokenizer, the LLM client), built
once per process and reused by every partition that process runs.

The local executor's partitions run in the driver, which hands over what it already loaded (`provided`);
a Ray worker loads its own on first use and keeps it for its later tasks: one in-process engine per worker,
or one HTTP client spreading calls over the configured servers.
"""
from __future__ import annotations

import contextlib
import json
from dataclasses import asdict
from typing import Iterator

_subjects: dict[str, object] = {}
_tokenizers: dict[str, object] = {}
_clients: dict[str, object] = {}


def _client_key(cfg) -> str:
    return json.dumps({"llm": asdict(cfg.llm), "run": str(cfg.path.resolve())}, sort_keys=True)


@contextlib.contextmanager
def provided(cfg, subject=None, client=None, tokenizer=None) -> Iterator[None]:
    """Within the block, partitions in this process use `subject`, `client` and `tokenizer` instead of loading
    their own; whatever the block loaded besides is dropped at its end (the driver keeps no stray model)."""
    before = {id(table): set(table) for table in (_subjects, _tokenizers, _clients)}
    if subject is not None:
        _subjects.setdefault(cfg.model, subject)
    if tokenizer is not None:
        _tokenizers.setdefault(cfg.model, tokenizer)
    if client is not None:
        _clients.setdefault(_client_key(cfg), client)
    try:
        yield
    finally:
        for table in (_subjects, _tokenizers, _clients):
            for key in set(table) - before[id(table)]:
                value = table.pop(key)
                if table is _clients and value is not client:
                    value.close()


def subject_model(cfg):
    """The run's subject model, loaded once per process."""
    if cfg.model not in _subjects:
        from lantern.models.loading import load_subject_model

        _subjects[cfg.model] = load_subject_model(cfg.model)
    return _subjects[cfg.model]


def tokenizer(cfg):
    """The subject model's tokenizer (without loading the model where it is not loaded yet)."""
    if cfg.model in _tokenizers:
        return _tokenizers[cfg.model]
    if cfg.model in _subjects:
        return _subjects[cfg.model].tokenizer
    if cfg.model not in _tokenizers:
        from lantern.models.loading import load_tokenizer

        _tokenizers[cfg.model] = load_tokenizer(cfg.model)
    return _tokenizers[cfg.model]


def llm_client(cfg):
    """The run's LLM client behind its response cache, made once per process from `cfg.llm`."""
    key = _client_key(cfg)
    if key not in _clients:
        from lantern.llm.factory import SUBJECT_LLM, make_client, resolve_backend

        same_model = cfg.llm.model in (SUBJECT_LLM, cfg.model)
        in_process = resolve_backend(cfg.llm) == "transformers"
        subject = subject_model(cfg) if in_process and same_model else _subjects.get(cfg.model)
        _clients[key] = make_client(cfg.llm, cfg.path, subject)
    return _clients[key]
