"""Choose the judge's chat form (score/judge_prompts.py) on the TUNING half of the planted rules only.

For every planted rule that is not held out, the detection (and optionally fuzzing) items of a validation run's
records are judged with the TRUE and the SHUFFLED explanation in each chat form; prints per form the mean AUROC
over rules for both and their gap. Held-out rules are never read here, so `lantern validate`'s held-out rows
measure the chosen form on rules it was not chosen on.

    python benchmarks/tune_judge_prompts.py --run-dir runs/tune --forms contains,words,text+words

Smallest size (does it still run?): `--tokens 2048 --forms words --scorers detection,fuzzing --model DIR
--llm-model DIR` with a tiny Hugging Face model as subject and judge (the planted coder reads token ids, so any model
with the Gemma 3 tokenizer works).
"""
from __future__ import annotations

import argparse
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
from sklearn.metrics import roc_auc_score

from lantern.coders.planted import RULES
from lantern.config import LLMConfig
from lantern.llm.factory import make_client
from lantern.models.loading import load_subject_model
from lantern.pipeline.cache_stage import run_cache
from lantern.pipeline.files import records_file
from lantern.pipeline.records_stage import run_records
from lantern.score import detection, fuzzing
from lantern.score.answers import yes_probability
from lantern.score.judge_prompts import JUDGE_FORMS
from lantern.validate.flow import CODER, DEFAULT_TOKENS, validation_config
from lantern.validate.variants import variant_explanations


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run-dir", type=Path, default=Path("runs/tune-judge"))
    parser.add_argument("--model", default="embedded", help="subject model (the planted cache runs its forward)")
    parser.add_argument("--llm-model", default="embedded")
    parser.add_argument("--forms", default=",".join(JUDGE_FORMS))
    parser.add_argument("--scorers", default="detection")
    parser.add_argument("--tokens", type=int, default=DEFAULT_TOKENS)
    args = parser.parse_args()

    subject = load_subject_model(args.model)
    cfg = validation_config(args.run_dir, args.model, "embedded", args.tokens, LLMConfig(model=args.llm_model),
                            ["detection"])
    cfg.save()
    run_cache(cfg, subject)
    run_records(cfg)
    rows = pq.read_table(records_file(cfg.path, CODER)).to_pylist()
    by_latent: dict[int, list[dict]] = defaultdict(list)
    for row in rows:
        by_latent[row["latent"]].append(row)
    tuning = [latent for latent in sorted(by_latent) if not RULES[latent].held_out
              and any(r["split"] == "test" and r["kind"] == "negative" for r in by_latent[latent])]
    texts = variant_explanations({i: r.explanation for i, r in enumerate(RULES)}, tuning)
    client = make_client(cfg.llm, cfg.path, subject)
    tokenizer = subject.tokenizer
    print(f"tuning rules: {[RULES[latent].key for latent in tuning]}; judge {client.model_id}", flush=True)
    for scorer in args.scorers.split(","):
        for form in args.forms.split(","):
            started = time.perf_counter()
            aurocs: dict[str, list[float]] = {"true": [], "shuffled": []}
            for variant in aurocs:
                requests, labels, owners = [], [], []
                for latent in tuning:
                    if scorer == "detection":
                        items = detection.items(by_latent[latent])
                        made = [detection.request(tokenizer, texts[variant][latent], it, form) for it in items]
                    else:
                        items = fuzzing.items(by_latent[latent], cfg.explainer.mark_threshold, cfg.seed)
                        made = [fuzzing.request(tokenizer, texts[variant][latent], it, form) for it in items]
                    requests += made
                    labels += [it["label"] for it in items]
                    owners += [latent] * len(items)
                answers = client.complete(requests)
                p_yes = [yes_probability(a)[0] for a in answers]
                for latent in tuning:
                    pairs = [(lab, p) for lab, p, o in zip(labels, p_yes, owners) if o == latent and p is not None]
                    if len({lab for lab, _ in pairs}) == 2:
                        aurocs[variant].append(roc_auc_score([lab for lab, _ in pairs], [p for _, p in pairs]))
                print(f"  {scorer} {form} {variant}: " + " ".join(
                    f"{RULES[lat].key}={a:.2f}" for lat, a in zip(tuning, aurocs[variant])), flush=True)
            true, shuffled = np.mean(aurocs["true"]), np.mean(aurocs["shuffled"])
            print(f"{scorer} form={form}: AUROC TRUE {true:.3f} SHUFFLED {shuffled:.3f} gap {true - shuffled:+.3f} "
                  f"(n={len(aurocs['true'])} rules, {time.perf_counter() - started:.0f}s)", flush=True)
    client.close()


if __name__ == "__main__":
    main()
