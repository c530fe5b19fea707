"""Long reviews: truncation vs head+tail vs chunking, on the test reviews longer than 128 characters.

    python benchmarks/long_reviews.py runs/long/ml64_s0/classifier.npz runs/long/ml64_s1/classifier.npz ...

Each checkpoint is a classifier trained with the ``train`` command at some
``max_len`` (the README's: D=64, H=4, L=2, F=128, 4 epochs at most, early
stopping on validation, seeds 0-2, max_len 64 and 128). For each one, on the
same long test reviews:

* ``truncate``, ``head-tail``, ``chunk, mean of logits``, ``chunk, max``
  (`longtext.compare_on_long`, stride = half a window);
* ``chunk, attention pool``: `longtext.fit_attention_pool` learns the
  pooling vector (and re-fits the output layer) on frozen chunk vectors of
  1,000 long *training* reviews (a seeded sample) for 300 steps, then reads
  the test reviews with it.

The character TF-IDF + logistic regression baseline (`baselines.py`, C chosen
on validation, the whole text, no window) is scored on the same reviews.
Results are grouped by max_len: mean and the spread (min-max over seeds).
For each checkpoint, the accuracy difference of each reading against
truncation also gets a paired bootstrap 95% interval over the test reviews
(2,000 resamples, seeded): the spread that comes from having only ~300
long test reviews, beside the seed-to-seed spread.
Writes benchmarks/results/long_reviews.json.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from numpy_transformer import checkpoint, longtext                      # noqa: E402
from numpy_transformer.data import load_corpus                          # noqa: E402
from numpy_transformer.tokenizer import CharTokenizer                   # noqa: E402


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("checkpoints", nargs="+")
    p.add_argument("--min-chars", type=int, default=128)
    p.add_argument("--pool-texts", type=int, default=1000)
    p.add_argument("--pool-steps", type=int, default=300)
    p.add_argument("--no-baseline", action="store_true")
    p.add_argument("--baseline-json", default=None, help="reuse the TF-IDF numbers of an earlier run's JSON")
    p.add_argument("--json", default=str(ROOT / "benchmarks" / "results" / "long_reviews.json"))
    args = p.parse_args(argv)

    splits = load_corpus()
    test = splits["test"]
    long_idx = np.array([i for i, t in enumerate(test.texts) if len(t) > args.min_chars])
    long_test = test.subset(long_idx)
    print(f"test reviews longer than {args.min_chars} characters: {len(long_test)} of {len(test)} "
          f"({np.bincount(long_test.labels, minlength=2)[1]} positive)")
    results = {"min_chars": args.min_chars, "n_long_test": int(len(long_test)), "n_test": int(len(test)),
               "runs": []}
    if args.baseline_json:
        results["tfidf"] = json.loads(Path(args.baseline_json).read_text())["tfidf"]
        print(f"  TF-IDF + logistic regression (from {args.baseline_json}): accuracy {results['tfidf']['accuracy']:.4f}")
    elif not args.no_baseline:
        from numpy_transformer import metrics
        from numpy_transformer.baselines import fit_tfidf_baseline
        base = fit_tfidf_baseline(splits["train"].texts, splits["train"].labels, valid=splits["valid"])
        probs = base.predict_proba(long_test.texts)
        r = metrics.all_metrics(long_test.labels, probs.argmax(axis=1), probs[:, 1])
        results["tfidf"] = {k: float(r[k]) for k in ("accuracy", "f1", "auc")}
        print(f"  TF-IDF + logistic regression (whole text): accuracy {r['accuracy']:.4f}  AUC {r['auc']:.4f}")
    train = splits["train"]
    for path in args.checkpoints:
        t0 = time.perf_counter()
        ckpt = checkpoint.load(path)
        model, tok = ckpt.model, CharTokenizer.from_dict(ckpt.tokenizer)
        max_len = model.config["max_len"]
        rows = longtext.compare_on_long(model, tok, long_test, max_len)
        long_train = [i for i, t in enumerate(train.texts) if len(t) > max_len - 1]
        pick = np.random.default_rng(model.config["seed"]).permutation(long_train)[:args.pool_texts]
        u = longtext.fit_attention_pool(model, tok, [train.texts[i] for i in pick], train.labels[pick], max_len,
                                        steps=args.pool_steps, seed=model.config["seed"])
        rows["chunk, attention pool"] = longtext.evaluate_long(model, long_test, tok, max_len, "chunk",
                                                               aggregate="attention", pool_u=u)
        run = {"checkpoint": path, "max_len": max_len, "seed": model.config["seed"],
               "metrics": {name: {k: float(r[k]) for k in ("accuracy", "f1", "auc")} for name, r in rows.items()}}
        correct = {name: (r["probs"].argmax(axis=1) == long_test.labels).astype(float) for name, r in rows.items()}
        resample = np.random.default_rng(2019).integers(0, len(long_test), size=(2000, len(long_test)))
        run["minus_truncate_95"] = {}
        for name, c in correct.items():
            diffs = (c - correct["truncate"])[resample].mean(axis=1)
            run["minus_truncate_95"][name] = [float(np.mean(c - correct["truncate"])),
                                              float(np.percentile(diffs, 2.5)), float(np.percentile(diffs, 97.5))]
        results["runs"].append(run)
        print(f"  {path} (max_len {max_len}, seed {run['seed']}, {time.perf_counter() - t0:.0f}s): " +
              ", ".join(f"{name} {m['accuracy']:.4f}" for name, m in run["metrics"].items()))
    table = {}
    for run in results["runs"]:
        for name, m in run["metrics"].items():
            table.setdefault(run["max_len"], {}).setdefault(name, []).append(m["accuracy"])
    results["accuracy_by_max_len"] = {
        str(ml): {name: {"mean": float(np.mean(v)), "min": float(np.min(v)), "max": float(np.max(v)), "n": len(v)}
                  for name, v in rows.items()} for ml, rows in table.items()}
    print("\naccuracy on the long test reviews, mean [min, max] over seeds:")
    for ml, rows in results["accuracy_by_max_len"].items():
        for name, s in rows.items():
            print(f"  max_len {ml:>4s}  {name:24s} {s['mean']:.4f}  [{s['min']:.4f}, {s['max']:.4f}]  n={s['n']}")
    print("\naccuracy minus truncation's, per checkpoint [paired bootstrap 95% over the reviews]:")
    for run in results["runs"]:
        print(f"  max_len {run['max_len']} seed {run['seed']}: " + ", ".join(
            f"{name} {d:+.4f} [{lo:+.4f}, {hi:+.4f}]" for name, (d, lo, hi) in run["minus_truncate_95"].items()
            if name != "truncate"))
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(results, indent=1) + "\n")
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
