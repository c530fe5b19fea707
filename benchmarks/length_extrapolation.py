"""Length extrapolation: train at T = 64, evaluate held-out bits per character at T = 64 ... 512.

    NUMPY_TRANSFORMER_THREADS=1 OPENBLAS_NUM_THREADS=1 python benchmarks/length_extrapolation.py --steps 200

(The README's figure ran the kinds in two processes, ``--kinds sinusoidal
learned --json a.json`` and ``--kinds rope alibi --json b.json``, then
``--merge a.json b.json``: the same numbers as one process, in half the time.)

Four character language models that differ only in how they know positions
-- sinusoidal table, learned table, RoPE, ALiBi -- are trained with the same
seed, the same steps and the same batches (`corpus.PackedChunks` with one
seed: the pre-training corpus of `corpus.py`, People's Daily news + the
review training split) on windows of T = 64 characters. Each is then scored
on the held-out news (`corpus.py`'s md5-bucket-0 lines, never trained on)
in non-overlapping windows of T = 64, 128, 256 and 512, every position of a
window counted: bits per character = mean cross-entropy / ln 2. The models
are built with ``max_len = 512`` so that the longer windows fit: the
sinusoidal table is defined there, the learned table's rows 64..511 were
never trained (they keep their initial N(0, 0.02²) values), RoPE and ALiBi
need no table. Press et al. (2022) report that ALiBi keeps its perplexity
when tested on longer inputs than it was trained on while sinusoidal
positions degrade; this measures whether a small character model shows it.

A reference that knows nothing of positions beyond one character: an
interpolated character bigram (λ = 0.8 on the bigram, the rest on the
unigram, both fitted on the same training stream), the same at every T.

Writes benchmarks/results/length_extrapolation.json and
figures/length_extrapolation.png.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from numpy_transformer import functional as F                                         # noqa: E402
from numpy_transformer.corpus import PackedChunks, build_vocabulary, load_pretrain_corpus, token_stream  # noqa: E402
from numpy_transformer.models import TransformerLM                                   # noqa: E402
from numpy_transformer.optim import AdamW, clip_grad_norm, warmup_cosine             # noqa: E402

KINDS = ("sinusoidal", "learned", "rope", "alibi")


def bits_per_char(model, stream, T, max_tokens, batch_size=8):
    """Mean cross-entropy in bits over non-overlapping windows of T + 1 ids from the first ``max_tokens`` ids."""
    n = min(len(stream) - 1, max_tokens) // T
    windows = np.stack([stream[i * T:i * T + T + 1] for i in range(n)]).astype(np.int64)   # (n, T + 1)
    model.eval()
    total, count = 0.0, 0
    for s in range(0, n, batch_size):
        w = windows[s:s + batch_size]
        loss, _ = F.cross_entropy(model(w[:, :-1]).astype(np.float64), w[:, 1:])
        total += float(loss) * w[:, 1:].size
        count += w[:, 1:].size
    return total / count / math.log(2)


def bigram_bits(train, heldout, V, lam=0.8):
    """Interpolated bigram bits per character: p(b | a) = λ c(ab) / c(a) + (1 - λ) c(b) / N."""
    uni = np.bincount(train, minlength=V).astype(np.float64) + 1.0                # add-one on the unigram
    uni /= uni.sum()
    pairs, counts = np.unique(train[:-1].astype(np.int64) * V + train[1:], return_counts=True)
    first = np.bincount(train[:-1], minlength=V).astype(np.float64)
    codes = heldout[:-1].astype(np.int64) * V + heldout[1:]
    pos = np.searchsorted(pairs, codes)
    found = (pos < len(pairs)) & (pairs[np.minimum(pos, len(pairs) - 1)] == codes)
    c_ab = np.where(found, counts[np.minimum(pos, len(pairs) - 1)], 0)
    c_a = first[heldout[:-1]]
    p = lam * np.where(c_a > 0, c_ab / np.maximum(c_a, 1), 0.0) + (1 - lam) * uni[heldout[1:]]
    p = np.where(c_a > 0, p, uni[heldout[1:]])
    return float(-np.log2(p).mean())


def train_one(kind, V, train_stream, args, log):
    model = TransformerLM(V, d_model=args.d_model, n_heads=args.heads, n_layers=args.layers, d_ff=4 * args.d_model,
                          max_len=max(args.eval_T), dropout=0.0, pos_encoding=kind, seed=args.seed)
    params = model.parameters()
    opt = AdamW(params, lr=args.lr, weight_decay=0.01)
    chunks = PackedChunks(train_stream, args.train_T, seed=args.seed)     # the same batches for every kind
    t0 = time.perf_counter()
    for step in range(1, args.steps + 1):
        batch = chunks.next_batch(args.batch_size)                         # (B, T + 1)
        opt.lr = warmup_cosine(step, args.lr, args.warmup, args.steps, args.lr / 10)
        model.train()
        model.zero_grad()
        loss, cache = F.cross_entropy(model(batch[:, :-1]), batch[:, 1:])
        model.backward(F.cross_entropy_backward(1.0, cache))
        clip_grad_norm(params, 1.0)
        opt.step()
        if step % 100 == 0 or step == args.steps:
            log(f"  {kind:10s} step {step:4d}  train loss {float(loss):.3f} nats  {time.perf_counter() - t0:.0f}s")
    return model, time.perf_counter() - t0


def plot(results, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    Ts = results["eval_T"]
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    styles = {"sinusoidal": ("tab:blue", "o"), "learned": ("tab:orange", "s"), "rope": ("tab:green", "^"),
              "alibi": ("tab:purple", "D")}
    for kind in results["kinds"]:
        color, marker = styles[kind]
        ax.plot(Ts, results["bpc"][kind], marker=marker, color=color, label=kind)
    ax.axhline(results["bigram_bpc"], color="gray", ls=":", label="character bigram (no positions)")
    ax.axvline(results["train_T"], color="black", lw=0.8, ls="--")
    ax.text(results["train_T"] * 1.04, ax.get_ylim()[1], "trained at T=64", va="top", fontsize=8)
    ax.set_xscale("log", base=2)
    ax.set_xticks(Ts, [str(t) for t in Ts])
    ax.minorticks_off()
    ax.set(xlabel="evaluation window T (characters)", ylabel="held-out news, bits per character",
           title=f"Length extrapolation: {results['steps']} steps at T={results['train_T']}, "
                 f"D={results['d_model']}, L={results['layers']}")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--steps", type=int, default=200)
    p.add_argument("--train-T", type=int, default=64)
    p.add_argument("--eval-T", type=int, nargs="+", default=[64, 128, 256, 512])
    p.add_argument("--eval-tokens", type=int, default=8192, help="held-out ids scored at every T (default 8192)")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--d-model", type=int, default=64)
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--layers", type=int, default=2)
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--warmup", type=int, default=30)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--kinds", nargs="+", choices=KINDS, default=list(KINDS))
    p.add_argument("--figure", default=str(ROOT / "figures" / "length_extrapolation.png"))
    p.add_argument("--json", default=str(ROOT / "benchmarks" / "results" / "length_extrapolation.json"))
    p.add_argument("--merge", nargs="+", default=None,
                   help="instead of training: merge the JSON files of runs with other --kinds, plot them")
    args = p.parse_args(argv)
    if args.merge:
        parts = [json.loads(Path(f).read_text()) for f in args.merge]
        results = dict(parts[0])
        for part in parts[1:]:
            for key in ("steps", "train_T", "eval_T", "batch_size", "d_model", "layers", "seed", "eval_tokens"):
                if part[key] != results[key]:
                    raise SystemExit(f"--merge: {key} differs between the runs ({part[key]} vs {results[key]})")
            results["kinds"] = results["kinds"] + part["kinds"]
            results["bpc"] = {**results["bpc"], **part["bpc"]}
            results["train_seconds"] = {**results["train_seconds"], **part["train_seconds"]}
        Path(args.json).write_text(json.dumps(results, indent=1) + "\n")
        plot(results, Path(args.figure))
        print(f"wrote {args.json} and {args.figure}")
        return

    corpus = load_pretrain_corpus()
    tok = build_vocabulary(corpus)
    train_stream = token_stream(corpus.train, tok)
    heldout = token_stream(corpus.heldout["news"], tok)
    print(f"{corpus}; vocabulary {tok.vocab_size}; training stream {len(train_stream):,} ids, held-out news "
          f"{len(heldout):,} ids (first {args.eval_tokens:,} scored)")
    results = {"steps": args.steps, "train_T": args.train_T, "eval_T": args.eval_T, "batch_size": args.batch_size,
               "d_model": args.d_model, "layers": args.layers, "heads": args.heads, "seed": args.seed,
               "eval_tokens": args.eval_tokens, "kinds": args.kinds, "bpc": {}, "train_seconds": {}}
    results["bigram_bpc"] = bigram_bits(train_stream, heldout[:args.eval_tokens + 1], tok.vocab_size)
    print(f"  character bigram: {results['bigram_bpc']:.3f} bits/char")
    for kind in args.kinds:
        model, seconds = train_one(kind, tok.vocab_size, train_stream, args, print)
        results["bpc"][kind] = [bits_per_char(model, heldout, T, args.eval_tokens) for T in args.eval_T]
        results["train_seconds"][kind] = seconds
        print(f"  {kind:10s} bits/char at T = " + ", ".join(f"{T}: {b:.3f}" for T, b in
                                                           zip(args.eval_T, results["bpc"][kind])))
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(results, indent=1) + "\n")
    plot(results, Path(args.figure))
    print(f"  wrote {args.json} and {args.figure}")


if __name__ == "__main__":
    main()
