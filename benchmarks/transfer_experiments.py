"""The transfer-learning experiments of README § Transfer learning (issue 13), one command each.

Every run appends one JSON line to ``--results`` (default
``runs/transfer/results.jsonl``), so a long grid can be stopped and resumed
and the table and figure rebuilt from the file. Budgets are steps, not
seconds; every draw comes from a seeded Generator. Validation chooses (the
step, the C of TF-IDF, the probe's weight decay); test is only reported.

    python benchmarks/transfer_experiments.py tfidf   --fractions 0.01 0.03 0.1 0.3 1 --seeds 0 1 2
    python benchmarks/transfer_experiments.py features --init notebooks/assets/lm_small.npz --out runs/transfer/lm_feats.npz
    python benchmarks/transfer_experiments.py probe   --features runs/transfer/lm_feats.npz --fractions ... --seeds ...
    python benchmarks/transfer_experiments.py finetune --init notebooks/assets/lm_small.npz --steps 600 ...
    python benchmarks/transfer_experiments.py finetune --init scratch --like notebooks/assets/lm_small.npz ...
    python benchmarks/transfer_experiments.py domain  --init notebooks/assets/lm_small.npz --method dann --seed 0

Run with NUMPY_TRANSFORMER_THREADS=1 OPENBLAS_NUM_THREADS=1 on a shared machine.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from numpy_transformer import checkpoint
from numpy_transformer import functional as F
from numpy_transformer import metrics
from numpy_transformer.baselines import fit_tfidf_baseline
from numpy_transformer.data import Dataset, load_corpus
from numpy_transformer.nn import Linear
from numpy_transformer.optim import AdamW
from numpy_transformer.tokenizer import CharTokenizer
from numpy_transformer.transfer import (FinetuneConfig, TransferClassifier, classifier_from_pretrained, evaluate,
                                        finetune, label_subsets, pooled_features, pretrained_registry,
                                        split_by_domain)

CS = [0.3, 1.0, 3.0, 10.0, 30.0]


def _append(path, record):
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps(record, ensure_ascii=False) + "\n")
    print(json.dumps({k: v for k, v in record.items() if k != "history"}, ensure_ascii=False), flush=True)


def _scores(labels, probs):
    """Accuracy, AUC, and the share of texts called positive (next to the true share: a domain shift can
    move a classifier's threshold without changing how it ranks the texts, and this shows it)."""
    pred = probs.argmax(1)
    return {"acc": float((pred == labels).mean()), "auc": float(metrics.roc_auc(labels, probs[:, 1])),
            "called_positive": float((pred == 1).mean()), "positive": float(np.mean(labels == 1))}


def _subset(data, fraction, seed):
    if fraction >= 1.0:
        return data
    return data.subset(label_subsets(len(data), [fraction], seed=seed)[fraction])


def cmd_tfidf(args):
    c = load_corpus()
    for f in args.fractions:
        for s in (args.seeds if f < 1 else [0]):
            t0 = time.perf_counter()
            sub = _subset(c["train"], f, s)
            model = fit_tfidf_baseline(sub.texts, sub.labels, valid=(c["valid"].texts, c["valid"].labels), Cs=CS)
            _append(args.results, {"exp": "budget", "method": "tfidf", "fraction": f, "seed": s, "C": model.C,
                                   "valid": _scores(c["valid"].labels, model.predict_proba(c["valid"].texts)),
                                   "test": _scores(c["test"].labels, model.predict_proba(c["test"].texts)),
                                   "seconds": time.perf_counter() - t0})


def cmd_features(args):
    model, tok, prov = classifier_from_pretrained(args.init, seed=0)
    c = load_corpus()
    t0 = time.perf_counter()
    out = {name: pooled_features(model, c[name], tok, max_len=args.max_len) for name in ("train", "valid", "test")}
    np.savez(args.out, **out, **{f"{k}_labels": c[k].labels for k in out})
    print(f"features of {args.init} in {time.perf_counter() - t0:.0f}s -> {args.out}")


def fit_probe(x, y, xv, yv, weight_decays=(0.0, 1e-2, 1e-1), steps=300, seed=0):
    """A linear layer on frozen features, trained full-batch with AdamW; weight decay chosen on validation."""
    mu, sd = x.mean(0), x.std(0) + 1e-6          # standardise with the training subset's statistics
    best = None
    for wd in weight_decays:
        head = Linear(x.shape[1], 2, rng=np.random.default_rng(seed), dtype=np.float64)
        opt = AdamW(head.parameters(), lr=1e-2, weight_decay=wd)
        xs = (x - mu) / sd
        for _ in range(steps):
            head.zero_grad()
            loss, cache = F.cross_entropy(head(xs), y)
            head.backward(F.cross_entropy_backward(1.0, cache))
            opt.step()
        pv, _ = F.softmax(head((xv - mu) / sd))
        acc = float((pv.argmax(1) == yv).mean())
        if best is None or acc > best[0]:
            best = (acc, wd, head)
    _, wd, head = best
    return (lambda z: F.softmax(head((z - mu) / sd))[0]), wd


def cmd_probe(args):
    d = np.load(args.features)
    for f in args.fractions:
        for s in (args.seeds if f < 1 else [0]):
            t0 = time.perf_counter()
            idx = label_subsets(len(d["train_labels"]), [f], seed=s)[f] if f < 1 else np.arange(len(d["train_labels"]))
            predict, wd = fit_probe(d["train"][idx], d["train_labels"][idx], d["valid"], d["valid_labels"], seed=s)
            _append(args.results, {"exp": "budget", "method": f"probe:{args.name}", "fraction": f, "seed": s,
                                   "weight_decay": wd, "valid": _scores(d["valid_labels"], predict(d["valid"])),
                                   "test": _scores(d["test_labels"], predict(d["test"])),
                                   "seconds": time.perf_counter() - t0})


def _build(args, seed):
    """(model, tokenizer, provenance) from --init: a checkpoint, or 'scratch' shaped like --like."""
    if args.init != "scratch":
        return classifier_from_pretrained(args.init, pooling=args.pooling, dropout=args.dropout, seed=seed,
                                          causal=False if getattr(args, "bidirectional", False) else None)
    if args.like == "corpus":     # the pre-training vocabulary and lm_small's shape, without its weights
        from numpy_transformer.corpus import build_vocabulary, load_pretrain_corpus
        tok = build_vocabulary(load_pretrain_corpus())
        cfg = dict(vocab_size=tok.vocab_size, d_model=128, n_heads=4, n_layers=4, d_ff=512, max_len=128,
                   dropout=0.1, norm="pre", pos_encoding="sinusoidal", activation="gelu", scale_embeddings=True)
    else:
        like = checkpoint.load(args.like, model_registry=pretrained_registry())
        cfg = like.model.config
        tok = CharTokenizer.from_dict(like.tokenizer)
    model = TransferClassifier(cfg["vocab_size"], 2, d_model=cfg["d_model"], n_heads=cfg["n_heads"],
                               n_layers=cfg["n_layers"], d_ff=cfg["d_ff"], max_len=cfg["max_len"],
                               dropout=args.dropout if args.dropout is not None else cfg["dropout"],
                               norm=cfg["norm"], pos_encoding=cfg["pos_encoding"], pooling=args.pooling or "mean",
                               activation=cfg["activation"], scale_embeddings=cfg["scale_embeddings"], seed=seed,
                               causal=False)
    return model, tok, {"init_from": "scratch", "shaped_like": str(args.like)}


def _config(args, seed, **over):
    return FinetuneConfig(steps=args.steps, batch_size=args.batch_size, lr=args.lr, warmup_steps=args.warmup,
                          eval_every=args.eval_every, max_len=args.max_len, layer_decay=args.layer_decay,
                          freeze_encoder=args.freeze, unfreeze_every=args.unfreeze_every, seed=seed, **over)


def cmd_finetune(args):
    c = load_corpus()
    for f in args.fractions:
        for s in (args.seeds if f < 1 else args.seeds[:1]):
            model, tok, prov = _build(args, s)
            train = _subset(c["train"], f, s)
            hist = finetune(model, train, c["valid"], tok, _config(args, s), log=print)
            res = evaluate(model, c["test"], tok, args.max_len)
            val = evaluate(model, c["valid"], tok, args.max_len)
            name = args.name or ("scratch" if args.init == "scratch" else Path(args.init).stem)
            if args.save:
                out = Path(args.save)
                checkpoint.save(out, model, tokenizer=tok,
                                extra={**prov, "history": hist.as_dict(), "test_acc": res["accuracy"],
                                       "test_auc": res["auc"], "command": "benchmarks/transfer_experiments.py "
                                       "finetune " + " ".join(args.argv)})
                np.save(out.with_suffix(".test_probs.npy"), res["probs"])
                np.save(out.with_suffix(".valid_probs.npy"), val["probs"])
            _append(args.results, {"exp": "budget", "method": f"finetune:{name}", "fraction": f, "seed": s,
                                   "steps": args.steps, "best_step": hist.best_step, "lr": args.lr,
                                   "layer_decay": args.layer_decay,
                                   "valid": {"acc": val["accuracy"], "auc": val["auc"]},
                                   "test": {"acc": res["accuracy"], "auc": res["auc"]},
                                   "seconds": hist.seconds, "history": hist.as_dict()})


def cmd_domain(args):
    c = load_corpus()
    doms = {name: split_by_domain(c[name])[0] for name in ("train", "valid", "test")}
    src, tgt = args.source, args.target
    for s in args.seeds:
        model, tok, _ = _build(args, s)
        if args.method == "target":               # the upper bound: the target's own labels
            train, valid, over, target_texts = doms["train"][tgt], doms["valid"][tgt], {}, None
        else:
            train, valid = doms["train"][src], doms["valid"][src]
            over = {"adaptation": args.method, "adaptation_weight": args.weight}
            target_texts = None if args.method == "source" else doms["train"][tgt].texts
        feats_before = None
        hist = finetune(model, train, valid, tok, _config(args, s, **over), target_texts=target_texts, log=print)
        res_t = evaluate(model, doms["test"][tgt], tok, args.max_len)
        res_s = evaluate(model, doms["test"][src], tok, args.max_len)
        if args.save_features:
            np.savez(args.save_features,
                     source=pooled_features(model, doms["test"][src], tok, args.max_len),
                     target=pooled_features(model, doms["test"][tgt], tok, args.max_len),
                     source_labels=doms["test"][src].labels, target_labels=doms["test"][tgt].labels)
        _append(args.results, {"exp": "domain", "method": args.method, "source": src, "target": tgt, "seed": s,
                               "steps": args.steps, "best_step": hist.best_step, "weight": args.weight,
                               "init": args.name or args.init,
                               "target_test": {"acc": res_t["accuracy"], "auc": res_t["auc"]},
                               "source_test": {"acc": res_s["accuracy"], "auc": res_s["auc"]},
                               "seconds": hist.seconds, "history": hist.as_dict()})
        del feats_before


def cmd_pretrain_mlm(args):
    """A short masked-LM pre-training (until pretrain.py has --objective mlm): packed chunks, AdamW, cosine."""
    from numpy_transformer.corpus import PackedChunks, build_vocabulary, load_pretrain_corpus, token_stream
    from numpy_transformer.mlm import TransformerMLM, mask_tokens
    from numpy_transformer.optim import clip_grad_norm, warmup_cosine
    from numpy_transformer.tokenizer import BOS_ID, CLS_ID, EOS_ID, MASK, PAD_ID
    corpus = load_pretrain_corpus()
    tok = build_vocabulary(corpus)
    texts = load_corpus()["train"].texts if args.reviews_only else list(corpus.train)
    chunks = PackedChunks(token_stream(texts, tok), args.seq_len, seed=args.seed)
    model = TransformerMLM(tok.vocab_size, d_model=args.d_model, n_heads=args.heads, n_layers=args.layers,
                           d_ff=4 * args.d_model, max_len=128, dropout=0.1, norm="pre", activation="gelu",
                           seed=args.seed)
    opt = AdamW(model.parameters(), lr=args.lr, weight_decay=0.01)
    rng = np.random.default_rng([args.seed, 7])
    mask_id, first_char = tok.token_to_id(MASK), 5 + len(tok.extra_special)
    t0, loss_sum = time.perf_counter(), 0.0
    for step in range(1, args.steps + 1):
        ids = chunks.next_batch(args.batch_size)[:, :-1]                          # (B, T)
        valid = np.ones(ids.shape, dtype=bool)
        inputs, targets, chosen = mask_tokens(ids, valid, rng, mask_id, (first_char, tok.vocab_size),
                                              protected_ids=(PAD_ID, CLS_ID, BOS_ID, EOS_ID))
        opt.lr = warmup_cosine(step, args.lr, 100, args.steps, args.lr / 20)
        model.zero_grad()
        # the output layer only at the chosen positions: the same loss, a fraction of the cost
        loss, cache = F.cross_entropy(model(inputs, valid, positions=chosen), targets[chosen])
        model.backward(F.cross_entropy_backward(1.0, cache))
        clip_grad_norm(model.parameters(), 1.0)
        opt.step()
        loss_sum += float(loss)
        if step % 50 == 0 or step == args.steps:
            print(f"step {step}  mlm loss {loss_sum / 50:.3f} nats  {time.perf_counter() - t0:.0f}s", flush=True)
            loss_sum = 0.0
            checkpoint.save(args.out, model, tokenizer=tok,
                            extra={"objective": "mlm", "steps": step, "seq_len": args.seq_len,
                                   "batch_size": args.batch_size, "reviews_only": bool(args.reviews_only),
                                   "seconds": time.perf_counter() - t0,
                                   "command": "benchmarks/transfer_experiments.py " + " ".join(args.argv)})


def cmd_domain_features(args):
    """Domain adaptation on frozen pre-trained features: every method, several seeds, seconds each."""
    from numpy_transformer.transfer import adapt_features, domain_indices
    c = load_corpus()
    d = np.load(args.features)
    idx = {name: domain_indices(c[name])[0] for name in ("train", "valid", "test")}
    src, tgt = args.source, args.target
    xs, ys = d["train"][idx["train"][src]], d["train_labels"][idx["train"][src]]
    xt_train = d["train"][idx["train"][tgt]]
    xt_test, yt_test = d["test"][idx["test"][tgt]], d["test_labels"][idx["test"][tgt]]
    xs_test, ys_test = d["test"][idx["test"][src]], d["test_labels"][idx["test"][src]]
    pca_store = {}
    for method in args.methods:
        for s in args.seeds:
            t0 = time.perf_counter()
            if method == "target":      # the upper bound: the target's own training labels
                model = adapt_features(xt_train, d["train_labels"][idx["train"][tgt]], xt_train, "source",
                                       steps=args.steps, seed=s, weight=args.weight)
            else:
                model = adapt_features(xs, ys, xt_train, method, steps=args.steps, seed=s, weight=args.weight)
            if s == args.seeds[0]:
                pca_store[method] = (model.embed(xs_test), model.embed(xt_test))
            _append(args.results, {"exp": "domain-features", "method": method, "source": src, "target": tgt,
                                   "seed": s, "steps": args.steps, "weight": args.weight, "name": args.name,
                                   "target_test": _scores(yt_test, model.predict_proba(xt_test)),
                                   "source_test": _scores(ys_test, model.predict_proba(xs_test)),
                                   "seconds": time.perf_counter() - t0})
    if args.save_pca:
        np.savez_compressed(args.save_pca, **{f"{m}_{dom}": a.astype(np.float16) for m, (zs, zt) in pca_store.items()
                                             for dom, a in (("source", zs), ("target", zt))},
                            source_labels=ys_test, target_labels=yt_test,
                            raw_source=xs_test.astype(np.float16), raw_target=xt_test.astype(np.float16))


def cmd_ensemble(args):
    """Average the probabilities of fine-tuned models (and TF-IDF); the weight is chosen on validation."""
    c = load_corpus()
    members = {Path(p).stem: (np.load(Path(p).with_suffix(".valid_probs.npy")), np.load(Path(p).with_suffix(
        ".test_probs.npy"))) for p in args.checkpoints}
    if args.tfidf:
        model = fit_tfidf_baseline(c["train"].texts, c["train"].labels, C=10.0)
        members["tfidf"] = (model.predict_proba(c["valid"].texts), model.predict_proba(c["test"].texts))
    names = list(members)
    yv, yt = c["valid"].labels, c["test"].labels
    # weight of the first member against the mean of the others, on a grid, chosen on validation accuracy
    best = None
    for a in np.linspace(0.0, 1.0, 21):
        pv = a * members[names[0]][0] + (1 - a) * np.mean([members[n][0] for n in names[1:]], axis=0)
        acc = float((pv.argmax(1) == yv).mean())
        if best is None or acc > best[0] + 1e-12:
            best = (acc, a)
    a = best[1]
    pt = a * members[names[0]][1] + (1 - a) * np.mean([members[n][1] for n in names[1:]], axis=0)
    pv = a * members[names[0]][0] + (1 - a) * np.mean([members[n][0] for n in names[1:]], axis=0)
    _append(args.results, {"exp": "ensemble", "members": names, "weight_first": a,
                           "valid": _scores(yv, pv), "test": _scores(yt, pt),
                           "members_test": {n: _scores(yt, m[1]) for n, m in members.items()}})


LABELS = {"tfidf": "TF-IDF + logistic regression", "probe:lm_small": "linear probe on lm_small",
          "finetune:lm_small": "fine-tuned from lm_small",
          "finetune:tapt": "fine-tuned from lm_small + 800 steps on the review text (TAPT)",
          "finetune:mlm": "fine-tuned from the MLM encoder (BERT-style)",
          "finetune:scratch": "from scratch (same shape)"}


def chosen_on_validation(budget):
    """One row per (method family, label fraction): the variant with the best mean validation accuracy.

    A family is a LABELS key; its variants are the runs named after it (``finetune:lm_small``,
    ``finetune:lm_small_lr1e-4``, ``finetune:lm_small_ld0.7``, ...: a learning rate, layer-wise decay,
    gradual unfreezing). Choosing among them on validation at each budget is what a user would do; the
    test column of the chosen variant is what the figure and the README report. ``budget``: the summary's
    rows (mean = test accuracy, test AUC, seconds, validation accuracy). Returns the chosen rows, each
    with ``family`` added.
    """
    chosen = {}
    for r in budget:
        family = next((f for f in sorted(LABELS, key=len, reverse=True)
                       if r["method"] == f or r["method"].startswith(f + "_")), None)
        if family is None:
            continue
        key = (family, r["fraction"])
        if key not in chosen or r["mean"][3] > chosen[key]["mean"][3]:
            chosen[key] = {**r, "family": family}
    return [chosen[k] for k in sorted(chosen)]


def _budget_figure(summary, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for method, name in LABELS.items():
        rows = sorted((r for r in summary["chosen"] if r["family"] == method), key=lambda r: r["fraction"])
        if rows:
            ax.errorbar([100 * r["fraction"] for r in rows], [r["mean"][0] for r in rows],
                        yerr=[r["std"][0] for r in rows], marker="o", capsize=3, label=name)
    ax.set_xscale("log")
    ax.set_xlabel("% of the 13,832 training labels (nested subsets)")
    ax.set_ylabel("test accuracy")
    ax.set_title("Label budget: mean ± std over seeds (3 where the subset is small);\n"
                 "each point the variant best on validation", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    print(f"wrote {path}")


def cmd_summary(args):
    """Aggregate results.jsonl into one small JSON (mean, spread, n per method and budget) for README and notebook."""
    rows = [json.loads(line) for line in open(args.results, encoding="utf-8") if line.strip()]
    out = {"budget": {}, "domain": {}}
    shares = {}     # (key) -> [(share of target test texts called positive, true share)]
    for r in rows:
        if r["exp"] == "budget":
            key = (r["method"], r["fraction"])
            out["budget"].setdefault(key, []).append((r["test"]["acc"], r["test"]["auc"], r.get("seconds", 0.0),
                                                      r["valid"]["acc"]))
        elif r["exp"] in ("domain", "domain-features"):
            key = (r["exp"], r.get("name") or r.get("init"), r["source"], r["target"], r["method"])
            out["domain"].setdefault(key, []).append((r["target_test"]["acc"], r["target_test"]["auc"],
                                                      r["source_test"]["acc"], r.get("seconds", 0.0)))
            if "called_positive" in r["target_test"]:
                shares.setdefault(key, []).append((r["target_test"]["called_positive"], r["target_test"]["positive"]))

    def stats(values):
        a = np.array(values, dtype=np.float64)
        return {"mean": a.mean(0).round(5).tolist(), "std": (a.std(0, ddof=1) if len(a) > 1 else 0 * a[0]).round(5)
                .tolist(), "n": len(a)}
    summary = {"budget": [{"method": k[0], "fraction": k[1], **stats(v)} for k, v in sorted(out["budget"].items())],
               "domain": [{"exp": k[0], "init": k[1], "source": k[2], "target": k[3], "method": k[4], **stats(v),
                           **({"target_called_positive": round(float(np.mean([a for a, _ in shares[k]])), 4),
                               "target_positive": round(float(np.mean([b for _, b in shares[k]])), 4)}
                              if k in shares else {})}
                          for k, v in sorted(out["domain"].items())],
               "columns": {"budget": ["test accuracy", "test AUC", "seconds", "validation accuracy"],
                           "domain": ["target test accuracy", "target test AUC", "source test accuracy", "seconds"]}}
    from numpy_transformer.data import load_corpus as _lc
    from numpy_transformer.transfer import domain_indices
    summary["chosen"] = chosen_on_validation(summary["budget"])
    summary["domain_counts"] = {name: domain_indices(split)[1] for name, split in _lc().items()}
    summary["ensembles"] = [{k: r[k] for k in ("members", "weight_first", "valid", "test", "members_test")}
                            for r in rows if r["exp"] == "ensemble"]
    Path(args.out).write_text(json.dumps(summary, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    if args.figure:
        _budget_figure(summary, args.figure)
    for r in summary["budget"]:
        print(f"{r['method']:28s} {r['fraction']:5.2f}  acc {r['mean'][0]:.4f} ± {r['std'][0]:.4f}  "
              f"auc {r['mean'][1]:.4f} ± {r['std'][1]:.4f}  valid acc {r['mean'][3]:.4f}  n={r['n']}  "
              f"{r['mean'][2]:.0f}s")
    for r in summary["chosen"]:
        print(f"chosen on validation: {r['family']:20s} {r['fraction']:5.2f}  {r['method']:28s} "
              f"test acc {r['mean'][0]:.4f} ± {r['std'][0]:.4f}  valid acc {r['mean'][3]:.4f}")
    for r in summary["domain"]:
        print(f"{r['exp']:16s} {r['init']!s:10s} {r['source']}->{r['target']} {r['method']:12s} "
              f"target acc {r['mean'][0]:.4f} ± {r['std'][0]:.4f}  auc {r['mean'][1]:.4f}  "
              f"source acc {r['mean'][2]:.4f}  n={r['n']}"
              + (f"  called positive {r['target_called_positive']:.3f} (true {r['target_positive']:.3f})"
                 if "target_positive" in r else ""))


def main(argv=None):
    import sys
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--results", default="runs/transfer/results.jsonl")
    sub = p.add_subparsers(dest="cmd", required=True)
    t = sub.add_parser("tfidf")
    t.add_argument("--fractions", type=float, nargs="+", default=[0.01, 0.03, 0.1, 0.3, 1.0])
    t.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    fe = sub.add_parser("features")
    fe.add_argument("--init", required=True)
    fe.add_argument("--out", required=True)
    fe.add_argument("--max-len", type=int, default=128)
    pr = sub.add_parser("probe")
    pr.add_argument("--features", required=True)
    pr.add_argument("--name", required=True)
    pr.add_argument("--fractions", type=float, nargs="+", default=[0.01, 0.03, 0.1, 0.3, 1.0])
    pr.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    m = sub.add_parser("pretrain-mlm")
    m.add_argument("--out", required=True)
    m.add_argument("--steps", type=int, default=600)
    m.add_argument("--seq-len", type=int, default=64)
    m.add_argument("--batch-size", type=int, default=32)
    m.add_argument("--lr", type=float, default=1e-3)
    m.add_argument("--d-model", type=int, default=128)
    m.add_argument("--heads", type=int, default=4)
    m.add_argument("--layers", type=int, default=4)
    m.add_argument("--seed", type=int, default=0)
    m.add_argument("--reviews-only", action="store_true")
    df = sub.add_parser("domain-features")
    df.add_argument("--features", required=True)
    df.add_argument("--name", default="lm_small")
    df.add_argument("--methods", nargs="+", default=["source", "dann", "coral", "consistency", "target"])
    df.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    df.add_argument("--steps", type=int, default=1500)
    df.add_argument("--weight", type=float, default=1.0)
    df.add_argument("--source", default="hotel")
    df.add_argument("--target", default="laptop")
    df.add_argument("--save-pca")
    en = sub.add_parser("ensemble")
    en.add_argument("checkpoints", nargs="+")
    en.add_argument("--tfidf", action="store_true")
    su = sub.add_parser("summary")
    su.add_argument("--out", required=True)
    su.add_argument("--figure")
    for name in ("finetune", "domain"):
        q = sub.add_parser(name)
        q.add_argument("--init", required=True, help="a pre-trained checkpoint, or 'scratch'")
        q.add_argument("--like", help="with --init scratch: the checkpoint whose shape and vocabulary to use")
        q.add_argument("--name")
        q.add_argument("--steps", type=int, default=600)
        q.add_argument("--eval-every", type=int, default=100)
        q.add_argument("--batch-size", type=int, default=32)
        q.add_argument("--lr", type=float, default=5e-4)
        q.add_argument("--warmup", type=int, default=50)
        q.add_argument("--layer-decay", type=float, default=1.0)
        q.add_argument("--unfreeze-every", type=int, default=0)
        q.add_argument("--freeze", action="store_true")
        q.add_argument("--pooling", default=None)
        q.add_argument("--bidirectional", action="store_true",
                       help="drop a causal LM's mask when fine-tuning (BERT-style reading of GPT weights)")
        q.add_argument("--dropout", type=float, default=None)
        q.add_argument("--max-len", type=int, default=128)
        q.add_argument("--seeds", type=int, nargs="+", default=[0])
        if name == "finetune":
            q.add_argument("--fractions", type=float, nargs="+", default=[1.0])
            q.add_argument("--save")
        else:
            q.add_argument("--method", required=True, choices=["source", "dann", "coral", "consistency", "target"])
            q.add_argument("--weight", type=float, default=1.0)
            q.add_argument("--source", default="hotel")
            q.add_argument("--target", default="laptop")
            q.add_argument("--save-features")
    args = p.parse_args(argv)
    args.argv = sys.argv[2:] if argv is None else argv[1:]
    {"tfidf": cmd_tfidf, "features": cmd_features, "probe": cmd_probe, "finetune": cmd_finetune,
     "domain": cmd_domain, "pretrain-mlm": cmd_pretrain_mlm,
     "domain-features": cmd_domain_features, "summary": cmd_summary,
     "ensemble": cmd_ensemble}[args.cmd](args)


if __name__ == "__main__":
    main()
