"""`lantern validate --scorers intervention` at a reduced size (one target KL, 4 prompts, 12 tokens), as recorded in
benchmarks/RESULTS.md "Intervention on planted latents".

    python benchmarks/validate_intervention.py RUN_DIR

Options: `--tokens` (default 32,768), `--latents` (planted rules to record and score; default all of them), `--kl`
(the target KL in nats; default 1), `--model` (the subject; default `embedded`), `--llm-model` (the scoring LLM;
default: lantern's default LLM. RESULTS.md's run was scored by the 270M subject model, lantern's default LLM at the
time; `--llm-model subject` asks for it). Smallest size (does it still run?): `--tokens 2048 --latents 2 --kl 0.01
--model DIR --llm-model DIR`, DIR a tiny Hugging Face Gemma 3 (a random tiny model never reaches a KL of 1)."""
import argparse
import dataclasses
import time
from pathlib import Path

from lantern.config import LLMConfig
from lantern.llm.factory import make_client
from lantern.models.loading import load_subject_model
from lantern.validate import print_report, run_validation, validation_config
from lantern.validate.flow import DEFAULT_TOKENS

parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
parser.add_argument("run_dir", type=Path)
parser.add_argument("--tokens", type=int, default=DEFAULT_TOKENS)
parser.add_argument("--latents", type=int, default=None, help="planted rules to record and score (default: all)")
parser.add_argument("--kl", type=float, default=1.0, help="the one target KL (nats) the steering is calibrated to")
parser.add_argument("--model", default="embedded")
parser.add_argument("--llm-model", default=None)
args = parser.parse_args()

cfg = validation_config(args.run_dir, args.model, "embedded", args.tokens, LLMConfig(model=args.llm_model),
                        ["intervention"], 0)
if args.latents is not None:
    cfg.latents = args.latents
cfg.scoring = dataclasses.replace(cfg.scoring, intervention_targets=(args.kl,), intervention_prompts=4,
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
