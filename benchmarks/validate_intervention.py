"""`lantern validate --scorers intervention` at a reduced size (one target KL, 4 prompts, 12 tokens), as recorded in
benchmarks/RESULTS.md "Intervention on planted latents". Usage: python benchmarks/validate_intervention.py RUN_DIR"""
import dataclasses
import sys
import time
from pathlib import Path

from lantern.config import LLMConfig
from lantern.llm.factory import make_client
from lantern.models.loading import load_subject_model
from lantern.validate import print_report, run_validation, validation_config

cfg = validation_config(Path(sys.argv[1]), "embedded", "embedded", 32768, LLMConfig(), ["intervention"], 0)
cfg.scoring = dataclasses.replace(cfg.scoring, intervention_targets=(1.0,), intervention_prompts=4,
                                  intervention_tokens=12)
subject = load_subject_model(cfg.model)
client = make_client(cfg.llm, cfg.path, subject)
started = time.time()
try:
    report = run_validation(cfg, client, subject)
finally:
    client.close()
print_report(report)
print(f"seconds {time.time() - started:.0f}")
