"""Tokens per second of generation with and without the key/value cache, against the context length.

    python benchmarks/bench_kv_cache.py                      # writes figures/kv_cache_speedup.png
    python benchmarks/bench_kv_cache.py --contexts 64 256 --tokens 8

The model has the size of the shipped language model (D=128, H=4, L=4, F=512,
V=4,674; random weights: speed does not depend on them) with max_len=512, so
that no context here needs the window to restart. For each context length c a
prompt of c tokens is encoded (not timed), then ``--tokens`` tokens are
appended one at a time, timed: the uncached decoder runs the model over the
whole window for each one, the cached one computes one row per layer. Both
are timed alternately in the same process (``--repeats`` times, medians), so
the *ratio* is meaningful on a shared machine even when the absolute numbers
are not. Writes JSON to benchmarks/results/kv_cache.json.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import numpy_transformer  # noqa: E402,F401
import numpy as np  # noqa: E402

from numpy_transformer.generation import Decoder  # noqa: E402
from numpy_transformer.models import TransformerLM  # noqa: E402


def tokens_per_second(model, prompt, new_tokens, use_cache):
    dec = Decoder(model, use_cache=use_cache)
    dec.begin(prompt)
    rng = np.random.default_rng(0)
    t0 = time.perf_counter()
    for _ in range(new_tokens):
        dec.append(rng.integers(5, model.vocab_size, 1))
    return new_tokens / (time.perf_counter() - t0)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--contexts", type=int, nargs="+", default=[16, 64, 128, 256, 448])
    p.add_argument("--tokens", type=int, default=16, help="tokens appended (timed) per measurement")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--vocab", type=int, default=4674)
    p.add_argument("--figure", default=str(ROOT / "figures" / "kv_cache_speedup.png"))
    p.add_argument("--json", default=str(ROOT / "benchmarks" / "results" / "kv_cache.json"))
    args = p.parse_args(argv)
    model = TransformerLM(args.vocab, d_model=128, n_heads=4, n_layers=4, d_ff=512, max_len=512, dropout=0.0).eval()
    rows = []
    for c in args.contexts:
        if c + args.tokens > model.max_len:
            raise SystemExit(f"error: --contexts: {c} + --tokens {args.tokens} exceeds max_len {model.max_len}")
        prompt = np.random.default_rng(c).integers(5, args.vocab, (1, c))
        cached, plain = [], []
        for _ in range(args.repeats):
            cached.append(tokens_per_second(model, prompt, args.tokens, True))
            plain.append(tokens_per_second(model, prompt, args.tokens, False))
        row = {"context": c, "cached_tok_s": float(np.median(cached)), "uncached_tok_s": float(np.median(plain))}
        row["speedup"] = row["cached_tok_s"] / row["uncached_tok_s"]
        rows.append(row)
        print(f"context {c:4d}: cached {row['cached_tok_s']:8.1f} tok/s   uncached {row['uncached_tok_s']:8.1f} tok/s"
              f"   speed-up {row['speedup']:5.1f}x", flush=True)
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps({"rows": rows, "tokens": args.tokens, "repeats": args.repeats,
                                           "model": model.config}, indent=1))
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 3.8))
    ctx = [r["context"] for r in rows]
    a.plot(ctx, [r["cached_tok_s"] for r in rows], "o-", label="with key/value cache")
    a.plot(ctx, [r["uncached_tok_s"] for r in rows], "s-", label="recomputing the window")
    a.set_xlabel("context length (tokens)")
    a.set_ylabel("tokens / s")
    a.set_yscale("log")
    a.legend()
    a.set_title("generation speed (one CPU thread)")
    b.plot(ctx, [r["speedup"] for r in rows], "o-", color="C2")
    b.axhline(1, color="grey", lw=0.8)
    b.set_xlabel("context length (tokens)")
    b.set_ylabel("speed-up (x)")
    b.set_title("cache speed-up, measured in the same run")
    fig.tight_layout()
    Path(args.figure).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.figure, dpi=110)
    print(f"wrote {args.figure} and {args.json}")


if __name__ == "__main__":
    main()
