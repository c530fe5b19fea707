"""The language model's table: bits per character of the n-gram baselines and the Transformer, on both held-out sets.

    python benchmarks/lm_table.py ngram                           # fit orders 1-5, score both held-out sets
    python benchmarks/lm_table.py lm notebooks/assets/lm_small.npz --history runs/lm_ref/history.json
    python benchmarks/lm_table.py figure                          # figures/lm_bits_per_char.png

Everything is scored the same way (`corpus.token_stream`: ``[EOS] text [EOS]
...``, every token after the first predicted from the ones before it, [UNK]
for characters outside the vocabulary), fitted on the same pre-training text
with the same vocabulary. Results go to benchmarks/results/lm_table.json, one
key per part, so the parts can run at different times. Fitting times are
wall-clock and process CPU seconds on this (shared) machine.
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

from numpy_transformer import corpus as C  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results" / "lm_table.json"


def _load():
    return json.loads(RESULTS.read_text()) if RESULTS.exists() else {}


def _save(key, value):
    data = _load()
    data[key] = value
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(data, indent=1, ensure_ascii=False) + "\n")


def _streams(tok):
    corpus = C.load_pretrain_corpus()
    return C.token_stream(corpus.train, tok), {n: C.token_stream(corpus.heldout[n], tok) for n in C.HELDOUT_SETS}


def cmd_ngram(args):
    from numpy_transformer.ngram import KneserNeyLM
    tok = C.build_vocabulary(C.load_pretrain_corpus(), min_freq=2)
    train, held = _streams(tok)
    rows = []
    for order in args.orders:
        t0, c0 = time.perf_counter(), time.process_time()
        lm = KneserNeyLM(order, tok.vocab_size).fit(train)
        fit_wall, fit_cpu = time.perf_counter() - t0, time.process_time() - c0
        row = {"order": order, "fit_wall_s": round(fit_wall, 1), "fit_cpu_s": round(fit_cpu, 1)}
        row.update({name: lm.bits_per_char(s) for name, s in held.items()})
        rows.append(row)
        print(f"{order}-gram: news {row['news']:.3f}  reviews {row['reviews']:.3f} bits/char  "
              f"(fit {fit_wall:.1f}s wall, {fit_cpu:.1f}s CPU)", flush=True)
    _save("ngram", {"vocab_size": tok.vocab_size, "train_tokens": int(len(train)), "rows": rows})


def cmd_lm(args):
    from numpy_transformer.checkpoint import load
    from numpy_transformer.pretrain import evaluate_stream
    from numpy_transformer.tokenizer import CharTokenizer
    ck = load(args.checkpoint)
    tok = CharTokenizer.from_dict(ck.tokenizer)
    _, held = _streams(tok)
    res = {name: evaluate_stream(ck.model, s, batch_size=16) for name, s in held.items()}
    entry = {"checkpoint": str(args.checkpoint), "step": ck.extra.get("pretrain", {}).get("step"),
             "parameters": ck.model.num_parameters(), "config": ck.model.config,
             "bits": {k: v["bits"] for k, v in res.items()}, "ppl": {k: v["ppl"] for k, v in res.items()}}
    if args.history:
        entry["history"] = json.loads(Path(args.history).read_text())
    print(f"{args.checkpoint}: news {entry['bits']['news']:.3f}  reviews {entry['bits']['reviews']:.3f} bits/char")
    _save(args.key, entry)


def cmd_figure(args):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    data = _load()
    lm = data[args.key]
    h = lm["history"]
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8), sharey=True)
    for ax, name, title in zip(axes, ("news", "reviews"), ("held-out news", "review validation texts")):
        minutes = np.array(h["seconds"]) / 60
        ax.plot(h["step"], h["heldout_bits"][name], "o-", label="Transformer (1.4 M params)")
        for x, y, m in zip(h["step"], h["heldout_bits"][name], minutes):
            ax.annotate(f"{m:.0f}'", (x, y), textcoords="offset points", xytext=(0, 6), fontsize=7, ha="center")
        for row, style in zip(data["ngram"]["rows"], ("", ":", "-.", "--", "-")):
            if row["order"] in (2, 3, 5):
                ax.axhline(row[name], color="grey", ls=style or "-", lw=1,
                           label=f"{row['order']}-gram Kneser-Ney ({row[name]:.2f})")
        ax.set_xlabel("training step (labels: minutes of training, shared CPU)")
        ax.set_title(title)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("bits per character")
    axes[1].legend(fontsize=8)
    fig.suptitle("bits/char of the Transformer LM while it trains, against the n-gram baselines")
    fig.tight_layout()
    out = ROOT / "figures" / "lm_bits_per_char.png"
    fig.savefig(out, dpi=110)
    print(f"wrote {out}")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="what", required=True)
    q = sub.add_parser("ngram")
    q.add_argument("--orders", type=int, nargs="+", default=[1, 2, 3, 4, 5])
    q.set_defaults(func=cmd_ngram)
    q = sub.add_parser("lm")
    q.add_argument("checkpoint")
    q.add_argument("--history", help="the run's history.json (bits/char against training time)")
    q.add_argument("--key", default="transformer")
    q.set_defaults(func=cmd_lm)
    q = sub.add_parser("figure")
    q.add_argument("--key", default="transformer")
    q.set_defaults(func=cmd_figure)
    args = p.parse_args(argv)
    args.func(args)


if __name__ == "__main__":
    main()
