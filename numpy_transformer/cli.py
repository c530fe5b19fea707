"""Command line: ``python -m numpy_transformer <command> --help``.

Commands
  demo       the article's example step by step, then train, evaluate, predict, plot, save
  train      train a classifier on the real corpus or on your own TSV/CSV
  evaluate   metrics of a checkpoint on the test split (or your own file)
  predict    label and probability for each text given
  attention  attention maps of a checkpoint for one text, as a PNG
  figures    regenerate every PNG in figures/

Bad input (an empty text, a missing file, a malformed TSV ...) ends with one
line ``error: ...`` on stderr and exit status 2, never a traceback.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

DEFAULT_RUN_DIR = Path("runs")

# Modules of numpy_transformer/commands/ whose ``register(sub)`` adds their sub-commands.
CHAPTER_COMMANDS: tuple[str, ...] = ("lm", "transfer")


class UserError(Exception):
    """A problem with what the user asked for; printed as one line, exit status 2."""


# --------------------------------------------------------------------------- #
# Helpers shared by the commands
# --------------------------------------------------------------------------- #

def _load_data(args):
    from .data import load_corpus, load_tsv
    if getattr(args, "data", None):
        full = load_tsv(args.data)
        # A user's file has no split: carve one out the same way the corpus is split.
        from .data import Dataset, text_bucket
        buckets = np.array([text_bucket(t) for t in full.texts])
        idx = {"test": np.flatnonzero(buckets == 0), "valid": np.flatnonzero(buckets == 1),
               "train": np.flatnonzero(buckets >= 2)}
        splits = {name: full.subset(i) for name, i in idx.items()}
        for name, ds in splits.items():
            if len(ds) == 0:
                raise UserError(f"--data: the file has too few lines to fill the {name} split "
                                f"(10% each for test and validation); got {len(full)} lines")
        return splits
    return load_corpus()


def _build_model(args, vocab_size, num_classes=2):
    from .models import TransformerClassifier
    return TransformerClassifier(
        vocab_size=vocab_size, num_classes=num_classes, d_model=args.d_model, n_heads=args.heads,
        n_layers=args.layers, d_ff=args.d_ff, max_len=args.max_len, dropout=args.dropout,
        attention_dropout=args.attention_dropout,
        norm=args.norm, pooling=args.pooling, seed=args.seed)


def _load_checkpoint(path):
    from .checkpoint import load
    from .tokenizer import CharTokenizer
    if not Path(path).exists():
        raise UserError(f"checkpoint {str(path)!r} does not exist (train one with "
                        f"`python -m numpy_transformer train --out DIR`)")
    ckpt = load(path)
    if ckpt.tokenizer is None:
        raise UserError(f"checkpoint {str(path)!r} carries no tokenizer, so it cannot read text")
    return ckpt.model, CharTokenizer.from_dict(ckpt.tokenizer), ckpt


def _check_texts(texts, tokenizer, max_len, out=None):
    """Validate texts for predict/attention: non-empty, and warn about unknown characters and truncation."""
    out = out or sys.stdout
    for i, text in enumerate(texts):
        if not text.strip():
            raise UserError(f"text {i + 1} is empty; give some characters to classify")
        unknown = tokenizer.unknown_fraction(text)
        if unknown == 1.0:
            print(f"warning: text {i + 1} has only characters the model never saw; "
                  f"its prediction means nothing", file=out)
        if len(tokenizer.encode(text, add_cls=True)) > max_len:
            print(f"note: text {i + 1} is longer than max_len={max_len} tokens and was truncated", file=out)


def _print_metrics(result, label_names=("negative", "positive")):
    cm = np.asarray(result["confusion"])
    print(f"  accuracy  {result['accuracy']:.4f}")
    print(f"  precision {result['precision']:.4f}   TP / (TP + FP)")
    print(f"  recall    {result['recall']:.4f}   TP / (TP + FN)")
    print(f"  F1        {result['f1']:.4f}")
    if result.get("auc") is not None:
        print(f"  AUC       {result['auc']:.4f}")
    print("  confusion matrix (rows = true, columns = predicted):")
    print(f"  {'':>10s} {label_names[0]:>10s} {label_names[1]:>10s}")
    for i, name in enumerate(label_names):
        print(f"  {name:>10s} {cm[i, 0]:>10d} {cm[i, 1]:>10d}")


def _plot_attention(model, tokenizer, text, out_dir, stem, max_len):
    """Write the layer x head grid and the head-averaged last-layer map for one text."""
    from . import viz
    ids, mask = tokenizer.encode_batch([text], max_len, add_cls=True)
    model.eval()
    model(ids, mask)
    weights = np.stack([np.asarray(w[0]) for w in model.attention_weights])   # (L, H, T, T)
    T = int(mask[0].sum())
    tokens = [tokenizer.id_to_token(int(i)) for i in ids[0, :T]]
    weights = weights[:, :, :T, :T]
    short = text if len(text) <= 24 else text[:23] + "…"
    grid = out_dir / f"{stem}_grid.png"
    mean = out_dir / f"{stem}_mean.png"
    import matplotlib.pyplot as plt
    plt.close(viz.attention_grid(weights, tokens, title=f"attention, every layer and head: {short}", path=grid))
    plt.close(viz.attention_map(weights.mean(axis=(0, 1)), tokens,
                                title=f"attention averaged over layers and heads: {short}", path=mean))
    return grid, mean


# --------------------------------------------------------------------------- #
# demo: the main job
# --------------------------------------------------------------------------- #

def _demo_walkthrough():
    from . import functional as F
    from .data import SEED_SENTENCES
    from .models import TransformerClassifier
    from .tokenizer import CharTokenizer
    from .worked_example import SEED_PRINTED_ATTENTION, toy_attention, toy_embeddings, toy_positional_encoding, toy_words

    np.set_printoptions(precision=3, suppress=True, linewidth=110)
    print("=" * 78)
    print("Step 1. The article's worked example (seed section 4.3), with true numbers")
    print("=" * 78)
    texts = [t for t, _ in SEED_SENTENCES]
    print("\n1a. Chinese has no spaces: the article's text.split() keeps each sentence whole (errata C1):")
    for t in texts:
        print(f"    {t!r}.split() -> {t.split()}")
    tok = CharTokenizer.build(texts)
    print("\n1b. So we use characters. Sentence -> characters -> ids ([CLS]=2 first):")
    for t in texts:
        ids = tok.encode(t, add_cls=True)
        print(f"    {t}")
        print(f"      chars: {' '.join(t)}")
        print(f"      ids:   {ids}")

    words = toy_words(0)
    X = toy_embeddings(words)
    pe, pe_seed = toy_positional_encoding(len(words), 3)
    print(f"\n1c. The article's toy vectors for sentence 1 ({' '.join(words)}) and positional encodings:")
    print("    pos word  embedding            correct PE (sin, cos, sin)   article's PE (sin+cos)")
    for p, w in enumerate(words):
        print(f"    {p:3d} {w}  {X[p]}   {pe[p]}        {pe_seed[p]}")
    print("    The article instead adds another word's vector to each word (errata W1).")

    out, weights = toy_attention(X + pe)
    print("\n1d. One attention head, Q = K = V = embedding + PE: the T x T weights (row = query):")
    for w, row in zip(words, weights):
        print(f"    {w}  {row}   row sum = {row.sum():.3f}")
    print(f"    The article prints 3 numbers per word that do not sum to 1, e.g. 有趣 {SEED_PRINTED_ATTENTION['有趣']} (W2).")

    model = TransformerClassifier(vocab_size=tok.vocab_size, num_classes=2, d_model=16, n_heads=2, n_layers=1,
                                  d_ff=32, max_len=32, dropout=0.0, seed=0)
    ids, mask = tok.encode_batch(texts, 32, add_cls=True)
    p, _ = F.softmax(model.eval()(ids, mask).astype(np.float64))
    print("\n1e. A freshly initialised classifier (pools [CLS], then 2 classes, E4) predicts:")
    for t, row in zip(texts, p):
        print(f"    P(negative, positive) = {row}   {t}")
    print("    Its weights are random, so these numbers mean nothing yet; training gives them meaning.")
    print("    (The article prints three probabilities per sentence for two classes, W3.)")


def cmd_demo(args):
    from . import checkpoint, viz
    from .data import SEED_SENTENCES
    from .tokenizer import CharTokenizer
    from .train import TrainConfig, evaluate, fit, predict_texts

    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    _demo_walkthrough()

    print("\n" + "=" * 78)
    print(f"Step 2. Train a classifier on the real corpus (budget {args.time_budget:g}s)")
    print("=" * 78)
    splits = _load_data(args)
    print(f"    train {len(splits['train'])}, validation {len(splits['valid'])}, test {len(splits['test'])} reviews")
    tok = CharTokenizer.build(splits["train"].texts, min_freq=args.min_freq)
    model = _build_model(args, tok.vocab_size)
    print(f"    vocabulary {tok.vocab_size} characters; model {model.num_parameters():,} parameters")
    config = TrainConfig(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, time_budget=args.time_budget,
                         max_len=args.max_len, seed=args.seed, warmup_steps=args.warmup)
    history = fit(model, splits["train"], splits["valid"], tok, config, progress=not args.no_progress)
    print(f"    stopped: {history.stopped_because}; best epoch {history.best_epoch}")
    result = evaluate(model, splits["test"], tok, max_len=args.max_len)
    print("\n    Test split:")
    _print_metrics(result)

    print("\n" + "=" * 78)
    print("Step 3. The article's two sentences, classified by the trained model")
    print("=" * 78)
    texts = [t for t, _ in SEED_SENTENCES]
    probs, _ = predict_texts(model, tok, texts, args.max_len)
    for (text, label), p in zip(SEED_SENTENCES, probs):
        name = "positive" if p[1] >= 0.5 else "negative"
        print(f"    {name:8s} P(positive) = {p[1]:.3f}   (article: {'positive' if label else 'negative'})  {text}")

    print("\n" + "=" * 78)
    print(f"Step 4. Attention maps -> {out_dir}/")
    print("=" * 78)
    test = splits["test"]
    # one short positive and one short negative test review: maps stay readable up to ~30 characters
    short = np.array([8 <= len(t) <= 30 for t in test.texts])
    picks = [int(np.flatnonzero((test.labels == c) & short)[0]) if ((test.labels == c) & short).any()
             else int(np.flatnonzero(test.labels == c)[0]) for c in (1, 0)]
    examples = [("seed_sentence1", texts[0]), ("seed_sentence2", texts[1])] + [
        (f"test_review{i + 1}", test.texts[j][:30]) for i, j in enumerate(picks)]
    for stem, text in examples:
        for path in _plot_attention(model, tok, text, out_dir, stem, args.max_len):
            print(f"    wrote {path}")
    import matplotlib.pyplot as plt
    plt.close(viz.training_curves(history.as_dict(), path=out_dir / "training_curves.png"))
    print(f"    wrote {out_dir / 'training_curves.png'}")

    print("\n" + "=" * 78)
    print("Step 5. Save the checkpoint")
    print("=" * 78)
    path = out_dir / "classifier.npz"
    checkpoint.save(path, model, extra={"history": {k: v for k, v in history.as_dict().items()},
                                        "test": {k: result[k] for k in
                                                 ("accuracy", "precision", "recall", "f1", "auc")}},
                    tokenizer=tok.to_dict())
    print(f"    wrote {path} ({path.stat().st_size / 1e6:.1f} MB); try:")
    print(f"    python -m numpy_transformer predict {path} \"这本书太好看了\"")
    print(f"\nDone in {time.perf_counter() - t0:.0f}s.")


# --------------------------------------------------------------------------- #
# The other commands
# --------------------------------------------------------------------------- #

def cmd_train(args):
    from . import checkpoint
    from .tokenizer import CharTokenizer
    from .train import TrainConfig, evaluate, fit

    splits = _load_data(args)
    tok = CharTokenizer.build(splits["train"].texts, min_freq=args.min_freq)
    model = _build_model(args, tok.vocab_size, num_classes=int(max(splits["train"].labels.max(), 1)) + 1)
    print(f"train {len(splits['train'])}, validation {len(splits['valid'])}, test {len(splits['test'])}; "
          f"vocabulary {tok.vocab_size}; {model.num_parameters():,} parameters")
    config = TrainConfig(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, time_budget=args.time_budget,
                         max_len=args.max_len, seed=args.seed, warmup_steps=args.warmup, patience=args.patience)
    history = fit(model, splits["train"], splits["valid"], tok, config, progress=not args.no_progress)
    print(f"stopped: {history.stopped_because}; best epoch {history.best_epoch}")
    valid = evaluate(model, splits["valid"], tok, max_len=args.max_len)
    auc = valid.get("auc")
    print(f"validation: accuracy {valid['accuracy']:.4f}" + (f"  AUC {auc:.4f}" if auc is not None else ""))
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "classifier.npz"
    checkpoint.save(path, model, extra={"history": history.as_dict(), "data": args.data or "corpus"},
                    tokenizer=tok.to_dict())
    print(f"wrote {path}")
    if args.report_test:
        result = evaluate(model, splits["test"], tok, max_len=args.max_len)
        print("test split:")
        _print_metrics(result)


def cmd_evaluate(args):
    model, tok, _ = _load_checkpoint(args.checkpoint)
    from .train import evaluate
    splits = _load_data(args)
    data = splits[args.split]
    result = evaluate(model, data, tok, max_len=model.config["max_len"])
    print(f"{args.split} split, {len(data)} texts:")
    _print_metrics(result)


def cmd_predict(args):
    model, tok, _ = _load_checkpoint(args.checkpoint)
    from .train import predict_texts
    max_len = model.config["max_len"]
    _check_texts(args.texts, tok, max_len)
    probs, _ = predict_texts(model, tok, args.texts, max_len)
    for text, p in zip(args.texts, probs):
        label = int(np.argmax(p))
        name = ("negative", "positive")[label] if len(p) == 2 else str(label)
        print(f"{name}\t{p[label]:.3f}\t{text}")


def cmd_attention(args):
    model, tok, _ = _load_checkpoint(args.checkpoint)
    max_len = model.config["max_len"]
    _check_texts([args.text], tok, max_len)
    out = Path(args.out)
    if out.suffix.lower() != ".png":
        raise UserError(f"--out: expected a .png file name, got {str(out)!r}")
    out.parent.mkdir(parents=True, exist_ok=True)
    grid, mean = _plot_attention(model, tok, args.text, out.parent, out.stem, max_len)
    os.replace(grid, out)
    print(f"wrote {out} (every layer and head) and {mean} (averaged)")


def cmd_figures(args):
    from .figures import make_all
    for path in make_all(Path(args.out), quick=args.quick):
        print(f"wrote {path}")


# --------------------------------------------------------------------------- #
# Argument parsing
# --------------------------------------------------------------------------- #

def _add_model_flags(p):
    g = p.add_argument_group("model")
    g.add_argument("--d-model", type=int, default=128, help="model width D (default 128)")
    g.add_argument("--heads", type=int, default=4, help="attention heads H (default 4)")
    g.add_argument("--layers", type=int, default=2, help="Transformer blocks L (default 2)")
    g.add_argument("--d-ff", type=int, default=512, help="feed-forward width F (default 512)")
    g.add_argument("--max-len", type=int, default=128, help="longest sequence in tokens, [CLS] included (default 128)")
    g.add_argument("--dropout", type=float, default=0.1, help="dropout probability (default 0.1)")
    g.add_argument("--attention-dropout", type=float, default=0.0,
                   help="dropout on the attention weights, as BERT does (default 0: off)")
    g.add_argument("--norm", choices=["post", "pre", "parallel"], default="pre",
                   help="where LayerNorm goes (errata E2; default pre)")
    g.add_argument("--pooling", choices=["cls", "mean"], default="mean",
                   help="sequence pooling, errata E4: masked mean (default; better on validation) or [CLS]")
    g.add_argument("--min-freq", type=int, default=2, help="keep characters seen at least this often (default 2)")


def _add_train_flags(p, epochs, budget):
    g = p.add_argument_group("training")
    g.add_argument("--epochs", type=int, default=epochs, help=f"at most this many epochs (default {epochs})")
    g.add_argument("--time-budget", type=float, default=budget,
                   help=f"stop after this many seconds of training (default {budget})")
    g.add_argument("--batch-size", type=int, default=32)
    g.add_argument("--lr", type=float, default=1e-3, help="peak learning rate of AdamW (default 1e-3)")
    g.add_argument("--warmup", type=int, default=100, help="warm-up steps (default 100)")
    g.add_argument("--patience", type=int, default=3, help="early stopping patience in epochs (default 3)")
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--no-progress", action="store_true", help="no progress bar")


def build_parser():
    parser = argparse.ArgumentParser(prog="python -m numpy_transformer",
                                     description="A readable NumPy Transformer for teaching.")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("demo", help="the article's example, then train, evaluate, predict, plot and save")
    _add_model_flags(p)
    _add_train_flags(p, epochs=30, budget=180.0)
    p.add_argument("--data", help="a TSV/CSV of text<TAB>label instead of the built-in corpus")
    p.add_argument("--out", default=str(DEFAULT_RUN_DIR / "demo"), help="output folder (default runs/demo)")
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("train", help="train a classifier and save a checkpoint")
    _add_model_flags(p)
    _add_train_flags(p, epochs=30, budget=None)
    p.add_argument("--data", help="a TSV/CSV of text<TAB>label (default: the built-in review corpus)")
    p.add_argument("--out", default=str(DEFAULT_RUN_DIR / "train"), help="output folder (default runs/train)")
    p.add_argument("--report-test", action="store_true", help="also print test-split metrics at the end")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("evaluate", help="metrics of a checkpoint on a split")
    p.add_argument("checkpoint")
    p.add_argument("--data", help="a TSV/CSV instead of the built-in corpus")
    p.add_argument("--split", choices=["train", "valid", "test"], default="test")
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("predict", help="label and probability for each text")
    p.add_argument("checkpoint")
    p.add_argument("texts", nargs="+", help="one or more texts")
    p.set_defaults(func=cmd_predict)

    p = sub.add_parser("attention", help="plot the attention maps of one text")
    p.add_argument("checkpoint")
    p.add_argument("text")
    p.add_argument("--out", required=True, help="PNG file to write")
    p.set_defaults(func=cmd_attention)

    p = sub.add_parser("figures", help="regenerate every PNG in figures/")
    p.add_argument("--out", default="figures")
    p.add_argument("--quick", action="store_true", help="tiny model, for tests")
    p.set_defaults(func=cmd_figures)

    # The article's other chapters keep their commands in their own modules
    # (numpy_transformer/commands/<chapter>.py), each with ``register(sub)``.
    import importlib
    for name in CHAPTER_COMMANDS:
        importlib.import_module(f".commands.{name}", __package__).register(sub)
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    from .checkpoint import CheckpointError
    try:
        args.func(args)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except (UserError, CheckpointError, ValueError, TypeError, FileNotFoundError, UnicodeDecodeError) as exc:
        if os.environ.get("NUMPY_TRANSFORMER_DEBUG"):
            raise  # the full traceback, for developers
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0
