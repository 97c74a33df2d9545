#!/usr/bin/env python3
"""Train the TopK SAEs that lantern ships for the embedded model (Gemma 3 270M; residual after layers.6, and
for the cross-layer and width ablations one after layers.8 and a narrower one after layers.6).

Writes sparsify's on-disk format (`<out>/layers.6/{cfg.json,sae.safetensors}`, weights in float16)
and reports held-out quality. Needs the `sparsify` extra: pip install "eai-sparsify>=1.3".

  python scripts/train_embedded_sae.py                 # train, then evaluate (~12 min on 2 idle CPU cores)
  python scripts/train_embedded_sae.py --eval-only     # evaluate the shipped SAE again
  python scripts/train_embedded_sae.py --hookpoint layers.8 --out src/lantern/assets/sae-l8
  python scripts/train_embedded_sae.py --latents 2048 --out src/lantern/assets/sae-w2048

Data split: the embedded corpus is tokenized into 256-token sequences (BOS first). `lantern run`
explains latents on the FIRST sequences of that stream, so training reads sequences from the END and
evaluation reads the first --eval-tokens. Position 0 (BOS, ~20x the norm of other positions) is
never used. Training follows sparsify's own recipe in a plain loop: b_dec initialised to the data
mean, decoder rows kept at unit norm (gradient parallel to them removed), loss = fvu + auxk_alpha *
auxk_loss with latents dead after --dead-tokens unfired tokens, Adam with linear warmup and decay.
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from lantern.coders.sparsify import SparsifyCoder
from lantern.data.corpus import tokenize_corpus
from lantern.models.forward import capture_activations
from lantern.models.hookpoints import resolve_hookpoint
from lantern.models.loading import load_subject_model
from lantern.progress import progress_bar

ROOT = Path(__file__).resolve().parent.parent
HOOKPOINT = "layers.6"
"""The default hookpoint (`--hookpoint` picks another)."""
SEQ_LEN = 256


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tokens", type=int, default=450_000,
                   help="training tokens read from the end of the stream (BOS included; BOS is then dropped)")
    p.add_argument("--eval-tokens", type=int, default=32_768, help="held-out tokens from the start of the stream")
    p.add_argument("--latents", type=int, default=4096)
    p.add_argument("--k", type=int, default=32)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--batch-tokens", type=int, default=2048, help="activations per optimiser step")
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--warmup-steps", type=int, default=50)
    p.add_argument("--auxk-alpha", type=float, default=1 / 32)
    p.add_argument("--dead-tokens", type=int, default=100_000,
                   help="a latent unfired for this many training tokens counts as dead for the AuxK loss")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=ROOT / "src" / "lantern" / "assets" / "sae")
    p.add_argument("--hookpoint", default=HOOKPOINT, help="residual stream after this block (sparsify spelling)")
    p.add_argument("--eval-only", action="store_true", help="skip training; evaluate <out>/<hookpoint>")
    p.add_argument("--acts-cache", type=Path, default=None,
                   help="reuse activations saved at this .pt path (for quick reruns while tuning)")
    return p.parse_args()


@torch.inference_mode()
def collect(sm, tokens: np.ndarray, label: str, hookpoint: str, batch_seqs: int = 16) -> torch.Tensor:
    """Residuals at `hookpoint` of every non-BOS position of `tokens` [n_seq, SEQ_LEN], as float32 [n, 640]."""
    hp = [resolve_hookpoint(sm.model, hookpoint)]
    d = sm.model.config.hidden_size
    out = torch.empty(len(tokens), SEQ_LEN - 1, d)
    with progress_bar() as bar:
        task = bar.add_task(label, total=len(tokens))
        for start in range(0, len(tokens), batch_seqs):
            ids = torch.from_numpy(tokens[start:start + batch_seqs]).long()
            acts = capture_activations(sm.model, ids, hp)[hookpoint]
            out[start:start + len(ids)] = acts[:, 1:].float()
            bar.advance(task, len(ids))
    return out.flatten(0, 1)


def load_activations(args, need_train: bool) -> tuple[torch.Tensor | None, torch.Tensor, dict]:
    """Tokenize the embedded corpus once, split it (eval = head, train = tail) and run the model."""
    if args.acts_cache and args.acts_cache.exists():
        cached = torch.load(args.acts_cache)  # may hold more training tokens than asked: keep the tail
        n_train = args.tokens // SEQ_LEN
        cached["info"]["train_sequences"][0] = cached["info"]["train_sequences"][1] - n_train
        return cached["train"][-n_train * (SEQ_LEN - 1):], cached["eval"], cached["info"]
    sm = load_subject_model()
    corpus = tokenize_corpus("embedded", sm.tokenizer, SEQ_LEN, None, sm.bos_id, seed=0)
    n_eval, n_train = args.eval_tokens // SEQ_LEN, args.tokens // SEQ_LEN
    if n_eval + n_train > len(corpus.tokens):
        raise SystemExit(f"corpus has {len(corpus.tokens)} sequences; asked for {n_eval} eval + {n_train} train")
    info = {"hookpoint": args.hookpoint, "corpus_sequences": len(corpus.tokens), "eval_sequences": [0, n_eval],
            "train_sequences": [len(corpus.tokens) - n_train, len(corpus.tokens)]}
    eval_acts = collect(sm, corpus.tokens[:n_eval], "held-out activations", args.hookpoint)
    train_acts = collect(sm, corpus.tokens[-n_train:], "training activations", args.hookpoint) if need_train else None
    if args.acts_cache:
        torch.save({"train": train_acts, "eval": eval_acts, "info": info}, args.acts_cache)
    return train_acts, eval_acts, info


def train(args, acts: torch.Tensor):
    """sparsify's training step, minus the model forward: we feed precomputed activations."""
    from sparsify import SparseCoder, SparseCoderConfig

    torch.manual_seed(args.seed)
    sae = SparseCoder(acts.shape[1], SparseCoderConfig(activation="topk", num_latents=args.latents, k=args.k))
    sae.b_dec.data = acts.mean(0)  # as sparsify's trainer does on its first step
    opt = torch.optim.Adam(sae.parameters(), lr=args.lr)
    steps_per_epoch = len(acts) // args.batch_tokens
    total = steps_per_epoch * args.epochs
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min((s + 1) / args.warmup_steps, max(0.0, (total - s) / (total - args.warmup_steps))))
    since_fired = torch.zeros(args.latents, dtype=torch.long)
    gen = torch.Generator().manual_seed(args.seed)
    log = []
    with progress_bar() as bar:
        task = bar.add_task("training", total=total)
        for epoch in range(args.epochs):
            order = torch.randperm(len(acts), generator=gen)
            fvus, auxks = [], []
            for step in range(steps_per_epoch):
                x = acts[order[step * args.batch_tokens:(step + 1) * args.batch_tokens]]
                sae.set_decoder_norm_to_unit_norm()
                dead = since_fired > args.dead_tokens
                out = sae(x, dead_mask=dead)
                (out.fvu + args.auxk_alpha * out.auxk_loss).backward()
                sae.remove_gradient_parallel_to_decoder_directions()
                opt.step()
                opt.zero_grad(set_to_none=True)
                sched.step()
                since_fired += len(x)
                since_fired[out.latent_indices[out.latent_acts > 0].unique()] = 0
                fvus.append(out.fvu.item())
                auxks.append(out.auxk_loss.item())
                bar.update(task, advance=1, description=f"training ep {epoch + 1} fvu {np.mean(fvus[-50:]):.3f} "
                                                         f"dead {dead.float().mean():.1%}")
            log.append({"epoch": epoch + 1, "train_fvu": float(np.mean(fvus)), "auxk": float(np.mean(auxks)),
                        "dead_frac": float((since_fired > args.dead_tokens).float().mean())})
            print(json.dumps(log[-1]), flush=True)
    sae.set_decoder_norm_to_unit_norm()
    return sae, log


def save_fp16(sae, folder: Path) -> None:
    """Save with sparsify's own save_to_disk, then rewrite the weights as float16 (~10.5 MB for 4,096 latents)."""
    with tempfile.TemporaryDirectory() as tmp:
        sae.save_to_disk(Path(tmp) / folder.name)
        weights = load_file(Path(tmp) / folder.name / "sae.safetensors")
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "cfg.json").write_text((Path(tmp) / folder.name / "cfg.json").read_text())
    save_file({k: v.half().contiguous() for k, v in weights.items()}, folder / "sae.safetensors",
              metadata={"format": "pt"})
    (folder / "sae.safetensors").chmod(0o644)


@torch.no_grad()
def check_loaders_agree(folder: Path, x: torch.Tensor) -> dict:
    """lantern's SparsifyCoder and sparsify's own loader read the same fp16 file into the same encoder."""
    from sparsify import SparseCoder

    ours = SparsifyCoder(folder)
    theirs = SparseCoder.load_from_disk(folder)
    assert theirs.dtype == torch.float16 and torch.equal(theirs.encoder.weight.float(), ours.W_enc)
    a, b = ours.encode(x), theirs.float().encode(x)  # same math in fp32: must match to rounding
    same = (a.indices.sort(1).values == b.top_indices.sort(1).values).all(1).float().mean().item()
    rel = ((a.values.sort(1).values - b.top_acts.sort(1).values).norm() / a.values.norm()).item()
    assert same > 0.999 and rel < 1e-4, f"loaders disagree: same top-k set {same:.4f}, rel diff {rel:.1e}"
    return {"same_topk_set": same, "rel_diff": rel}


@torch.no_grad()
def evaluate(folder: Path, acts: torch.Tensor) -> dict:
    """Held-out FVU, dead fraction and per-latent firing counts, through lantern's own loader.

    Gemma's residual has one "massive activation" dimension with most of the variance, so FVU is
    also reported without it: that is the part of the signal that the latents actually carve up.
    """
    coder = SparsifyCoder(folder)
    counts = torch.zeros(coder.num_latents, dtype=torch.long)
    err_per_dim = torch.zeros(acts.shape[1], dtype=torch.float64)
    for chunk in acts.split(4096):
        sparse = coder.encode(chunk)
        err_per_dim += (chunk - coder.decode(sparse)).double().pow(2).sum(0)
        counts += torch.bincount(sparse.indices[sparse.values > 0].long(), minlength=coder.num_latents)
    var_per_dim = (acts - acts.mean(0)).double().pow(2).sum(0)
    top = var_per_dim.argmax()
    rest = torch.arange(len(var_per_dim)) != top
    c = counts.float()
    return {"held_out_tokens": len(acts), "fvu": (err_per_dim.sum() / var_per_dim.sum()).item(),
            "top_dim_variance_share": (var_per_dim[top] / var_per_dim.sum()).item(),
            "fvu_without_top_dim": (err_per_dim[rest].sum() / var_per_dim[rest].sum()).item(),
            "dead_frac": (counts == 0).float().mean().item(),
            "fire_count_median": c.median().item(), "fire_count_p10": c.quantile(0.1).item(),
            "fire_count_p90": c.quantile(0.9).item(), "fire_count_max": c.max().item(),
            "mean_active_per_token": c.sum().item() / len(acts),
            "file_bytes": (folder / "sae.safetensors").stat().st_size}


def main() -> None:
    args = parse_args()
    t0 = time.perf_counter()
    folder = args.out / args.hookpoint
    train_acts, eval_acts, info = load_activations(args, need_train=not args.eval_only)
    report = {"data": info}
    if args.eval_only:
        info.pop("train_sequences")
    else:
        report["train_tokens"] = len(train_acts)
        sae, report["epochs"] = train(args, train_acts)
        save_fp16(sae, folder)
        report["train_subset_fvu"] = evaluate(folder, train_acts[-len(eval_acts):])["fvu"]
        del train_acts
    report["loaders"] = check_loaders_agree(folder, eval_acts[:2048])
    report["eval"] = evaluate(folder, eval_acts)
    report["wall_s"] = round(time.perf_counter() - t0, 1)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
