"""Command line: ``python -m numpy_transformer <command> --help``.

Commands
  demo       the article's example step by step, then train, evaluate, predict, plot, save
  train      train a classifier on the real corpus or on your own TSV/CSV (--resume DIR continues one)
  evaluate   metrics of a checkpoint on the test split, or on the whole of your own file
  predict    label and every class's probability for each text (arguments, --file, or - for stdin)
  attention  attention maps of a checkpoint for one text, as a PNG
  figures    regenerate every PNG in figures/
  zeroshot   label-word scores of a pre-trained language model, raw and calibrated (notebook 13)
  fewshot    accuracy vs k labels per class: prototypes, linear models, fine-tuning (notebook 13)
  finetune   a classifier from a pre-trained LM or MLM checkpoint, optionally domain-adapted (notebook 11)
  domains    how many reviews the keyword rule puts in each domain (notebook 11)
  compress   prune, quantize or distill a checkpoint (commands/compress.py)

Bad input (an empty text, a missing file, a malformed TSV, a bad flag, an
unwritable --out ...) ends with one line ``error: ...`` on stderr and exit
status 2, never a traceback, and is found before any training starts. The
promises every training command keeps (budgets in steps, the best checkpoint
saved as it improves, Ctrl-C and ``--resume``) live in `runs.py`.
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
CHAPTER_COMMANDS: tuple[str, ...] = ("lm", "zeroshot", "longtext", "transfer", "compress")


class UserError(Exception):
    """A problem with what the user asked for; printed as one line, exit status 2."""


# --------------------------------------------------------------------------- #
# Helpers shared by the commands
# --------------------------------------------------------------------------- #

#: The demo's training budget, in steps (6 epochs of the corpus's 433 batches), the same on
#: every machine. About 3 minutes of training on the 2-core project machine with 2 threads
#: when it is not loaded (~64 ms a step); see the README ("What `make demo` does").
DEMO_STEPS = 2600
#: What the demo starts from: the character language model `pretrain` made (notebooks/assets/README.md).
#: Fine-tuned from it, the classifier is a little better than the same model trained from scratch
#: (README, "Transfer learning"); `--init-from none` gives the from-scratch demo.
DEMO_INIT = Path(__file__).resolve().parent.parent / "notebooks" / "assets" / "lm_small.npz"
#: Fine-tuning budget of the demo: about 3.5 minutes on the 2-core project machine (1,000 steps gave the
#: same validation accuracy in a minute more). 5e-4 is the fine-tuning runs' peak learning rate (1e-4
#: was no better at 10 % of the labels).
DEMO_FINETUNE_STEPS = 800
FINETUNE_LR = 5e-4
#: No clock limit by default (a slower machine takes longer, and prints the same numbers);
#: `--time-budget` adds one, and a run the clock cuts short says so.
DEMO_TIME_BUDGET = None


def _shown_path(path: Path) -> str:
    """``path`` relative to the working folder when it is inside it (shorter in help and output)."""
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def _split_by_md5(full, flag="--data"):
    """A user's file cut into test / valid / train the way the corpus is (md5 of the text)."""
    from .data import text_bucket
    buckets = np.array([text_bucket(t) for t in full.texts])
    idx = {"test": np.flatnonzero(buckets == 0), "valid": np.flatnonzero(buckets == 1),
           "train": np.flatnonzero(buckets >= 2)}
    splits = {name: full.subset(i) for name, i in idx.items()}
    for name, ds in splits.items():
        if len(ds) == 0:
            raise UserError(f"{flag}: the file has too few lines to fill the {name} split "
                            f"(10% each for test and validation); got {len(full)} lines")
    return splits


def _load_data(args, training=True):
    """The corpus's three splits, or the user's --data file split the same way.

    For training, data whose training split holds one class only is refused.
    """
    from . import runs
    from .data import load_corpus, load_tsv
    if getattr(args, "data", None):
        full = load_tsv(args.data)
        if training:
            runs.check_two_classes(full.labels, where=f"--data {args.data}")
        splits = _split_by_md5(full)
    else:
        splits = load_corpus()
    if training:
        runs.check_two_classes(splits["train"].labels, where=f"--data {args.data}" if args.data else "corpus")
        if getattr(args, "length_mix", False):
            from .data import with_short_views
            splits["train"] = with_short_views(splits["train"])
    return splits


def _data_fingerprint(ds) -> str:
    """md5 of a dataset's texts and labels: a resumed run must see the same training data."""
    import hashlib
    h = hashlib.md5()
    for text, label in zip(ds.texts, ds.labels.tolist()):
        h.update(f"{label}\t{text}\n".encode("utf-8"))
    return h.hexdigest()


def _build_model(args, vocab_size, num_classes=2):
    from .models import TransformerClassifier
    return TransformerClassifier(
        vocab_size=vocab_size, num_classes=num_classes, d_model=args.d_model, n_heads=args.heads,
        n_layers=args.layers, d_ff=args.d_ff, max_len=args.max_len, dropout=args.dropout,
        attention_dropout=args.attention_dropout,
        norm=args.norm, pooling=args.pooling, seed=args.seed, **_long_text_model_options(args))


def _long_text_model_options(args):
    """pos_encoding / attention / window / global_tokens from the long-text flags (see longtext.py)."""
    from .longtext import model_options
    try:
        return model_options(args)
    except ValueError as exc:
        raise UserError(str(exc)) from None


def _train_config(args):
    from .train import TrainConfig
    return TrainConfig(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, time_budget=args.time_budget,
                       max_len=args.max_len, seed=args.seed, warmup_steps=args.warmup, patience=args.patience,
                       max_steps=args.steps, log_every=args.log_every)


def _open_checkpoint(path):
    """Any model checkpoint that can read text: (model, tokenizer, checkpoint), or one clear error."""
    from .checkpoint import load
    from .tokenizer import CharTokenizer
    if not Path(path).exists():
        raise UserError(f"checkpoint {str(path)!r} does not exist (train one with "
                        f"`python -m numpy_transformer train --out DIR`)")
    from .compression import is_compressed, load_compressed
    # a pruned or quantized model (`compress` writes them) loads through its own format
    ckpt = load_compressed(path) if is_compressed(path) else load(path)
    if ckpt.tokenizer is None:
        raise UserError(f"checkpoint {str(path)!r} carries no tokenizer, so it cannot read text")
    return ckpt.model, CharTokenizer.from_dict(ckpt.tokenizer), ckpt


def _load_checkpoint(path, command="predict"):
    """A classifier checkpoint for ``command``; a language model is named as one."""
    from .models import TransformerClassifier, TransformerLM
    model, tokenizer, ckpt = _open_checkpoint(path)
    kind = type(model).__name__
    if kind == "TransformerMLM":                 # the transfer chapter's masked LM (mlm.py): an encoder to fine-tune
        raise UserError(f"checkpoint {str(path)!r}: this is a masked language model (TransformerMLM), not a "
                        f"classifier; fine-tune it first (`python -m numpy_transformer finetune --init-from "
                        f"{str(path)} --out DIR`), then {command} with the result")
    if isinstance(model, TransformerLM):
        raise UserError(f"checkpoint {str(path)!r}: this is a language model ({kind}), not a classifier; "
                        f"use generate, not {command}")
    from .compression import Int8Classifier
    # a fine-tuned TransferClassifier is a TransformerClassifier; `compress quantize --compute int8` writes an
    # Int8Classifier
    if not isinstance(model, (TransformerClassifier, Int8Classifier)):
        raise UserError(f"checkpoint {str(path)!r} holds a {kind}, expected a TransformerClassifier")
    return model, tokenizer, ckpt


def _check_texts(texts, tokenizer, max_len, out=None):
    """Validate texts for predict/attention: non-empty; warn (stderr) about unknown characters and truncation."""
    out = out or sys.stderr
    for i, text in enumerate(texts):
        if not text.strip():
            raise UserError(f"text {i + 1} is empty; give some characters to classify")
    for i, text in enumerate(texts):
        unknown = tokenizer.unknown_fraction(text)
        if unknown == 1.0:
            print(f"warning: text {i + 1} has only characters the model never saw; "
                  f"its prediction means nothing", file=out)
        if len(tokenizer.encode(text, add_cls=True)) > max_len:
            print(f"note: text {i + 1} is longer than max_len={max_len} tokens and was truncated", file=out)


def _class_names(num_classes):
    from .data import LABEL_NAMES
    return LABEL_NAMES if num_classes == len(LABEL_NAMES) else tuple(str(c) for c in range(num_classes))


def _print_metrics(result, labels=None, label_names=("negative", "positive")):
    """The metrics table; ``labels`` (the true labels) lets it say when only one class is present."""
    cm = np.asarray(result["confusion"])
    print(f"  accuracy  {result['accuracy']:.4f}")
    print(f"  precision {result['precision']:.4f}   TP / (TP + FP)")
    print(f"  recall    {result['recall']:.4f}   TP / (TP + FN)")
    print(f"  F1        {result['f1']:.4f}")
    present = np.unique(labels) if labels is not None else np.arange(len(label_names))
    if result.get("auc") is not None:
        print(f"  AUC       {result['auc']:.4f}")
    elif len(present) < 2:
        only = label_names[int(present[0])] if len(present) else "none"
        print(f"  AUC       undefined: every text here is {only}, and AUC compares the two classes")
        print(f"  note: with one class only, accuracy is the share predicted {only}; "
              f"precision, recall and F1 describe that share, not a classifier's quality")
    print("  confusion matrix (rows = true, columns = predicted):")
    print(f"  {'':>10s} {label_names[0]:>10s} {label_names[1]:>10s}")
    for i, name in enumerate(label_names):
        print(f"  {name:>10s} {cm[i, 0]:>10d} {cm[i, 1]:>10d}")


def _short_reviews(model, tok, max_len, show_mistakes=0):
    """Accuracy on the held-out short everyday reviews (data.load_short_reviews), by domain; prints one line."""
    from .data import LABEL_NAMES, load_short_reviews
    from .train import predict_texts
    ds, domains = load_short_reviews(with_domains=True)
    probs, _ = predict_texts(model, tok, ds.texts, max_len)
    pred = probs.argmax(axis=1)
    right = pred == ds.labels
    domains = np.array(domains)
    per = ", ".join(f"{d}s {right[domains == d].mean():.2f}" for d in ("hotel", "book", "laptop"))
    print(f"  short everyday reviews ({len(ds)}, written for this project, never trained on): "
          f"accuracy {right.mean():.3f} ({per})")
    wrong = np.flatnonzero(~right)
    for i in wrong[:show_mistakes]:
        print(f"    wrong: {LABEL_NAMES[int(pred[i])]:8s} P(positive) = {probs[i, 1]:.3f}  {ds.texts[i]}")
    if show_mistakes and len(wrong) > show_mistakes:
        print(f"    ... and {len(wrong) - show_mistakes} more")
    return float(right.mean())


def _plot_attention(model, tokenizer, text, out_dir, stem, max_len):
    """Write the layer x head grid and the head-averaged last-layer map for one text."""
    from . import viz
    ids, mask = tokenizer.encode_batch([text], max_len, add_cls=True)
    model.eval()
    model.use_fast_paths(False)         # local attention keeps its (T, T) weights only on the plain path
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


def _prepare_training(args, command):
    """Everything a new run needs, checked before any training: flags, data, vocabulary, model, --out.

    Returns (run, splits, tokenizer, model, config); ``run`` (a `runs.RunDir`)
    records what ``train --resume`` needs.
    """
    from . import runs
    from .tokenizer import CharTokenizer
    init = _init_checkpoint(args, command)
    if init is None and getattr(args, "bidirectional", False):
        raise UserError("--bidirectional: only with --init-from a causal language model (a model trained from "
                        "scratch reads both ways already)")
    _fill_budget_defaults(args, init, command)
    runs.check_flags(args)
    splits = _load_data(args)
    provenance = {}
    if init is None:
        tok = CharTokenizer.build(splits["train"].texts, min_freq=args.min_freq)
        model = _build_model(args, tok.vocab_size)
    else:
        model, tok, provenance = _pretrained_model(args, init)
    runs.check_vocabulary(tok, splits["train"].texts)
    config = _train_config(args)
    run = runs.RunDir(args.out, command="python -m numpy_transformer train",
                      extra={"command": command, "args": _saved_args(args), "data": args.data or "corpus",
                             "train_md5": _data_fingerprint(splits["train"]), **provenance})
    return run, splits, tok, model, config


def _fill_budget_defaults(args, init, command):
    """--lr and the demo's --steps when not given: fine-tuning takes smaller and fewer steps than training anew."""
    if args.lr is None:
        args.lr = 1e-3 if init is None else FINETUNE_LR
    if command == "demo" and args.steps is None:
        args.steps = DEMO_STEPS if init is None else DEMO_FINETUNE_STEPS


#: The model flags a pre-trained checkpoint decides (its shape and its vocabulary).
_SHAPE_FLAGS = ("d_model", "heads", "layers", "d_ff", "norm", "min_freq", "attention", "pos_encoding", "window",
                "global_tokens")


def _init_checkpoint(args, command):
    """The --init-from file as a Path, or None for a model trained from scratch; checked before any work.

    The shape flags are refused next to --init-from: the pre-trained model decides
    the width, depth, heads, LayerNorm placement and the vocabulary.
    """
    value = getattr(args, "init_from", None)
    if value is None or str(value).lower() in ("none", "scratch"):
        return None
    path = Path(value)
    if not path.is_file():
        raise UserError(f"--init-from: no such file {str(path)!r} (a checkpoint of `pretrain`, or 'none' to "
                        f"train from scratch)")
    defaults = vars(build_parser().parse_args([command]))
    for key in _SHAPE_FLAGS:
        if key in defaults and getattr(args, key, None) != defaults[key]:
            flag = "--" + key.replace("_", "-")
            raise UserError(f"{flag}: the pre-trained model given by --init-from decides the model's shape and "
                            f"vocabulary; leave {flag} out (or give --init-from none)")
    return path


def _pretrained_model(args, path):
    """(model, tokenizer, provenance): a classifier whose trunk is copied from the checkpoint at ``path``."""
    from .transfer import classifier_from_pretrained
    try:
        model, tok, provenance = classifier_from_pretrained(path, pooling=args.pooling, dropout=args.dropout,
                                                            seed=args.seed,
                                                            causal=False if getattr(args, "bidirectional", False)
                                                            else None)
    except ValueError as exc:
        if str(exc).startswith("pooling:"):                 # name the flag the user gave
            raise UserError(f"--{exc}") from None
        raise
    if args.max_len > model.max_len:
        raise UserError(f"--max-len: the pre-trained model reads at most {model.max_len} tokens, got {args.max_len}")
    if args.attention_dropout:
        raise UserError("--attention-dropout: not available with --init-from (the pre-trained blocks have none)")
    return model, tok, provenance


# Flags that do not change the numbers, so --resume may be given new values of them.
_RESUME_MAY_CHANGE = ("no_progress", "time_budget", "report_test")
_NOT_SAVED = ("func", "command", "resume", "out", "no_progress")


def _saved_args(args):
    return {k: v for k, v in vars(args).items() if k not in _NOT_SAVED}


def _report_interrupt(run, history):
    print(f"stopped: {history.stopped_because}", file=sys.stderr)
    print(run.interrupted_message(), file=sys.stderr)
    return 130


def _report_stop(history, indent=""):
    print(f"{indent}stopped: {history.stopped_because}; best epoch {history.best_epoch}")
    if history.cut_by_clock:
        print(f"{indent}note: the clock cut this run short; another machine would train a different number of "
              f"steps and print other numbers (raise --time-budget, or leave it out, to train all "
              f"{history.steps_planned} steps)")


def cmd_demo(args):
    from . import viz
    from .data import SEED_SENTENCES
    from .train import evaluate, fit, predict_texts

    t0 = time.perf_counter()
    # A bad flag, unusable data or a bad --out fail now, not after training.
    run, splits, tok, model, config = _prepare_training(args, "demo")
    out_dir = run.path
    _demo_walkthrough()

    print("\n" + "=" * 78)
    budget = f"{args.steps} steps" if args.steps else f"{args.epochs} epochs"
    where = '--data ' + args.data if args.data else 'the real corpus'
    init = run.extra.get("init_from")
    if init:
        print(f"Step 2. Fine-tune the pre-trained language model on {where} (budget: {budget}, the same on "
              f"every machine)")
    else:
        print(f"Step 2. Train a classifier from scratch on {where} (budget: {budget}, the same on every machine)")
    print("=" * 78)
    if init:
        print(f"    starting from {init} ({run.extra['init_class']}, pre-trained by `pretrain` on news and the "
              f"training reviews):\n    its embeddings and {len(model.encoder.blocks)} blocks are copied "
              f"({run.extra['copied']} tensors), the head is new; {run.extra['style']}-style (the causal mask "
              f"stays).\n    Why: README, \"Transfer learning\" (pre-trained vs from scratch, on validation); "
              f"--init-from none trains from scratch instead.")
    print(f"    train {len(splits['train'])}, validation {len(splits['valid'])}, test {len(splits['test'])} reviews")
    if args.length_mix:
        print("    (train includes the opening and closing clauses of every long training review as short examples:\n"
              "     --length-mix, on by default here, because the corpus's short reviews are mostly negative)")
    print(f"    vocabulary {tok.vocab_size} characters; model {model.num_parameters():,} parameters")
    history = fit(model, splits["train"], splits["valid"], tok, config, progress=not args.no_progress, run=run)
    if history.interrupted:
        return _report_interrupt(run, history)
    _report_stop(history, "    ")
    result = evaluate(model, splits["test"], tok, max_len=args.max_len)
    print(f"\n    Test split ({len(splits['test'])} reviews):")
    _print_metrics(result, splits["test"].labels)
    short = _short_reviews(model, tok, args.max_len, show_mistakes=6)

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
    # one short positive and one short negative test review: grids stay readable on a handout
    # up to ~20 characters (viz.attention_grid)
    short_test = np.array([8 <= len(t) <= 20 for t in test.texts])
    picks = [int(np.flatnonzero((test.labels == c) & short_test)[0]) if ((test.labels == c) & short_test).any()
             else int(np.flatnonzero(test.labels == c)[0]) for c in (1, 0) if (test.labels == c).any()]
    examples = [("seed_sentence1", texts[0]), ("seed_sentence2", texts[1])] + [
        (f"test_review{i + 1}", test.texts[j][:20]) for i, j in enumerate(picks)]
    for stem, text in examples:
        for path in _plot_attention(model, tok, text, out_dir, stem, args.max_len):
            print(f"    wrote {path}")
    import matplotlib.pyplot as plt
    plt.close(viz.training_curves(history.as_dict(), path=out_dir / "training_curves.png"))
    print(f"    wrote {out_dir / 'training_curves.png'}")

    print("\n" + "=" * 78)
    print("Step 5. Save the checkpoint")
    print("=" * 78)
    path = run.save_best(model, tokenizer=tok, extra={
        "history": history.as_dict(), "short_reviews_accuracy": short,
        "test": {k: result[k] for k in ("accuracy", "precision", "recall", "f1", "auc")}})
    run.state_path.unlink(missing_ok=True)     # the run is complete: nothing to resume
    print(f"    wrote {path} ({path.stat().st_size / 1e6:.1f} MB); try:")
    print(f"    python -m numpy_transformer predict {path} \"这本书太好看了\"")
    print(f"\nDone in {time.perf_counter() - t0:.0f}s.")
    return 0


# --------------------------------------------------------------------------- #
# The other commands
# --------------------------------------------------------------------------- #

def cmd_train(args):
    from .train import fit

    if args.resume:
        return _resume_train(args)
    run, splits, tok, model, config = _prepare_training(args, "train")   # --out checked before training
    print(f"train {len(splits['train'])}, validation {len(splits['valid'])}, test {len(splits['test'])}; "
          f"vocabulary {tok.vocab_size}; {model.num_parameters():,} parameters")
    history = fit(model, splits["train"], splits["valid"], tok, config, progress=not args.no_progress, run=run)
    return _finish_train(args, run, model, tok, splits, history)


def _resume_train(args):
    """``train --resume DIR``: continue the interrupted run saved in DIR, with the flags it was started with."""
    from . import runs
    from .tokenizer import CharTokenizer
    from .train import fit
    if not Path(args.resume).is_dir():
        raise UserError(f"--resume: no such folder {args.resume!r} (give the --out folder of the interrupted run)")
    run = runs.RunDir(args.resume, flag="--resume", command="python -m numpy_transformer train")
    state = run.load_state()
    saved = state.extra.get("args")
    if not isinstance(saved, dict):
        raise UserError(f"--resume: {state.path} does not record the flags of its run")
    defaults = vars(build_parser().parse_args(["train"]))
    for key, value in vars(args).items():
        if key in _NOT_SAVED or key in _RESUME_MAY_CHANGE or key not in saved:
            continue
        if value != defaults.get(key) and value != saved[key]:
            flag = "--" + key.replace("_", "-")
            raise UserError(f"{flag}: --resume continues the run with the flags it was started with "
                            f"({flag} {saved[key]}); leave {flag} out")
    merged = {**defaults, **saved, "out": args.resume, "resume": args.resume, "no_progress": args.no_progress,
              "report_test": args.report_test}
    if args.time_budget != defaults["time_budget"]:
        merged["time_budget"] = args.time_budget
    resumed = argparse.Namespace(**merged)
    runs.check_flags(resumed)
    splits = _load_data(resumed)
    if _data_fingerprint(splits["train"]) != state.extra.get("train_md5"):
        raise UserError(f"--resume: the training data ({state.extra.get('data')}) is not what the run was "
                        f"started with; it cannot continue exactly")
    run.extra = {k: state.extra[k] for k in ("command", "args", "data", "train_md5") if k in state.extra}
    tok = CharTokenizer.from_dict(state.tokenizer)
    model = state.model
    p = state.progress
    print(f"resuming {args.resume}: epoch {p['epoch']}, step {p['step']}")
    history = fit(model, splits["train"], splits["valid"], tok, _train_config(resumed),
                  progress=not args.no_progress, run=run, resume=state)
    return _finish_train(resumed, run, model, tok, splits, history)


def _finish_train(args, run, model, tok, splits, history):
    from .train import evaluate
    if history.interrupted:
        return _report_interrupt(run, history)
    _report_stop(history)
    long_text = _long().train_long_text(args, model, tok, splits)
    valid = evaluate(model, splits["valid"], tok, max_len=args.max_len)
    auc = valid.get("auc")
    print(f"validation: accuracy {valid['accuracy']:.4f}" + (f"  AUC {auc:.4f}" if auc is not None else ""))
    path = run.save_best(model, tokenizer=tok, extra={"history": history.as_dict(),
                                                      **({"long_text": long_text} if long_text else {})})
    run.state_path.unlink(missing_ok=True)     # the run is complete: nothing to resume
    print(f"wrote {path}")
    if args.report_test:
        result = (evaluate(model, splits["test"], tok, max_len=args.max_len) if not long_text else
                  _long().evaluate_long(model, splits["test"], tok, args.max_len, long_text))
        print("test split:")
        _print_metrics(result, splits["test"].labels)
        if not args.data:
            _short_reviews(model, tok, args.max_len)
    return 0


def cmd_evaluate(args):
    from .data import load_corpus, load_tsv
    from .train import evaluate
    model, tok, ckpt = _load_checkpoint(args.checkpoint, "evaluate")
    long_text = _long().long_text_choice(args, ckpt, model.config["max_len"])
    if args.data:
        full = load_tsv(args.data)
        if args.split:
            data = _split_by_md5(full)[args.split]
            title = f"{args.data}: its {args.split} split by the md5 rule, {len(data)} of {len(full)} texts"
        else:
            data, title = full, f"{args.data}: all {len(full)} texts"
    else:
        split = args.split or "test"
        data = load_corpus()[split]
        title = f"corpus {split} split, {len(data)} texts"
    result = (_long().evaluate_long(model, data, tok, model.config["max_len"], long_text) if long_text else
              evaluate(model, data, tok, max_len=model.config["max_len"]))
    print(title + ":")
    _print_metrics(result, data.labels, _class_names(model.config["num_classes"]))
    if not args.data:
        _short_reviews(model, tok, model.config["max_len"])
    return 0


def _read_texts(source):
    """Texts from a file (one per line; blank lines skipped) or, for '-', from standard input."""
    if source == "-":
        raw = sys.stdin.buffer.read() if hasattr(sys.stdin, "buffer") else sys.stdin.read().encode("utf-8")
        where = "standard input"
    else:
        path = Path(source)
        if not path.is_file():
            raise UserError(f"--file: no such file {source!r}")
        raw, where = path.read_bytes(), source
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw[:exc.start].count(b"\n") + 1
        raise UserError(f"--file: {where} is not UTF-8 text (line {line})") from None
    texts = [line.strip() for line in text.splitlines() if line.strip()]
    if not texts:
        raise UserError(f"--file: {where} holds no text (one text per line expected)")
    return texts


def cmd_predict(args):
    from .train import predict_texts
    if args.file is not None and args.texts:
        raise UserError("give texts on the command line or --file FILE, not both")
    if args.file is not None:
        texts = _read_texts(args.file)
    elif args.texts == ["-"]:
        texts = _read_texts("-")
    elif args.texts:
        texts = args.texts
    else:
        raise UserError("nothing to classify: give texts, or --file FILE (one text per line; - for standard input)")
    model, tok, ckpt = _load_checkpoint(args.checkpoint, "predict")
    max_len = model.config["max_len"]
    long_text = _long().long_text_choice(args, ckpt, max_len)
    _check_texts(texts, tok, max_len if not long_text else 10**9)   # long texts are not truncated then
    if long_text:
        from .longtext import predict_long
        probs, _ = predict_long(model, tok, texts, max_len, **long_text)
    else:
        probs, _ = predict_texts(model, tok, texts, max_len)
    names = _class_names(probs.shape[1])
    print("\t".join(["label"] + [f"P({n})" for n in names] + ["text"]))
    for text, p in zip(texts, probs):
        print("\t".join([names[int(np.argmax(p))]] + [f"{q:.3f}" for q in p] + [text]))
    return 0


def cmd_attention(args):
    from . import runs
    out = runs.check_output_file(args.out, "--out", suffix=".png")
    model, tok, ckpt = _load_checkpoint(args.checkpoint, "attention")
    max_len = model.config["max_len"]
    long_text = _long().long_text_choice(args, ckpt, max_len)
    _check_texts([args.text], tok, max_len if not long_text else 10**9)
    if long_text and long_text["mode"] == "chunk":
        return _long().plot_chunks(model, tok, args.text, out, max_len, long_text)
    if long_text:                        # head-tail: the map of the text the model reads
        from .longtext import encode_long
        ids, _, _ = encode_long(tok, [args.text], max_len, "head-tail")
        args.text = tok.decode(ids[0])
    grid, mean = _plot_attention(model, tok, args.text, out.parent, out.stem, max_len)
    os.replace(grid, out)
    print(f"wrote {out} (every layer and head) and {mean} (averaged)")
    return 0


def cmd_figures(args):
    from . import runs
    from .figures import make_all
    out = runs.check_output_dir(args.out)
    for path in make_all(out, quick=args.quick):
        print(f"wrote {path}")
    return 0


# --------------------------------------------------------------------------- #
# Argument parsing
# --------------------------------------------------------------------------- #

def _add_model_flags(p, init_from=None):
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
    g.add_argument("--init-from", metavar="CKPT", default=init_from,
                   help="start from a pre-trained checkpoint (`pretrain`): its embeddings and blocks are copied, "
                        "the head is new, and the shape and vocabulary are its own; 'none' trains from scratch "
                        f"(default {'none' if init_from is None else init_from})")
    g.add_argument("--bidirectional", action="store_true",
                   help="with --init-from a causal LM: drop its causal mask, so every character reads the whole "
                        "text (default: keep it, GPT-style)")
    from .longtext import add_model_flags
    add_model_flags(g)


def _add_train_flags(p, epochs, steps, budget, steps_default=None, length_mix=False):
    g = p.add_argument_group("training (budgets count steps, so every machine trains the same)")
    g.add_argument("--epochs", type=int, default=epochs, help=f"at most this many epochs (default {epochs})")
    g.add_argument("--steps", type=int, default=steps,
                   help=f"at most this many training steps; the learning-rate schedule spans them "
                        f"(default {steps_default or steps or 'all the epochs'})")
    g.add_argument("--time-budget", type=float, default=budget,
                   help="a safety cut in seconds: the clock may stop the run early, and then it says so "
                        f"(default {budget if budget else 'none'})")
    g.add_argument("--batch-size", type=int, default=32)
    g.add_argument("--lr", type=float, default=None,
                   help=f"peak learning rate of AdamW (default 1e-3 from scratch, {FINETUNE_LR:g} with --init-from)")
    g.add_argument("--warmup", type=int, default=100, help="warm-up steps (default 100)")
    g.add_argument("--patience", type=int, default=3, help="early stopping patience in epochs (default 3)")
    g.add_argument("--log-every", type=int, default=50,
                   help="steps between two points of the training-loss curve (default 50)")
    g.add_argument("--length-mix", action=argparse.BooleanOptionalAction, default=length_mix,
                   help="add the opening and closing clauses of every long training review as short examples "
                        "with its label (data.short_views: in the corpus short reviews are mostly negative; "
                        f"default {'on' if length_mix else 'off'})")
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--no-progress", action="store_true", help="no progress bar")


def _add_long_flags(p):
    from .longtext import add_long_flags
    add_long_flags(p)


def _long():
    """The long-text chapter's command helpers (commands/longtext.py)."""
    from .commands import longtext
    return longtext


def build_parser():
    parser = argparse.ArgumentParser(prog="python -m numpy_transformer",
                                     description="A readable NumPy Transformer for teaching.")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("demo", help="the article's example, then train, evaluate, predict, plot and save")
    _add_model_flags(p, init_from=_shown_path(DEMO_INIT))
    _add_train_flags(p, epochs=30, steps=None, budget=DEMO_TIME_BUDGET,
                     steps_default=f"{DEMO_FINETUNE_STEPS} with --init-from, {DEMO_STEPS} from scratch",
                     length_mix=True)
    p.add_argument("--data", help="a TSV/CSV of text<TAB>label instead of the built-in corpus")
    p.add_argument("--out", default=str(DEFAULT_RUN_DIR / "demo"), help="output folder (default runs/demo)")
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("train", help="train a classifier and save a checkpoint")
    _add_model_flags(p)
    _add_train_flags(p, epochs=30, steps=None, budget=None)
    p.add_argument("--data", help="a TSV/CSV of text<TAB>label (default: the built-in review corpus)")
    p.add_argument("--out", default=str(DEFAULT_RUN_DIR / "train"),
                   help="output folder (default runs/train); the best checkpoint is written there as it improves")
    p.add_argument("--resume", metavar="DIR",
                   help="continue the interrupted run saved in DIR exactly (its flags, data order and state)")
    p.add_argument("--report-test", action="store_true", help="also print test-split metrics at the end")
    _add_long_flags(p)
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("evaluate", help="metrics of a checkpoint on the test split, or on your whole file")
    p.add_argument("checkpoint")
    p.add_argument("--data", help="a TSV/CSV to score: all of it (it is your test set) unless --split is given")
    p.add_argument("--split", choices=["train", "valid", "test"], default=None,
                   help="score only this split (the corpus's, or your file's cut by the md5 rule); "
                        "default: the corpus's test split, or all of --data")
    _add_long_flags(p)
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("predict", help="label and every class's probability for each text")
    p.add_argument("checkpoint")
    p.add_argument("texts", nargs="*", help="texts to classify ('-' alone: read them from standard input)")
    p.add_argument("--file", metavar="FILE", help="read texts from FILE, one per line ('-' = standard input)")
    _add_long_flags(p)
    p.set_defaults(func=cmd_predict)

    p = sub.add_parser("attention", help="plot the attention maps of one text")
    p.add_argument("checkpoint")
    p.add_argument("text")
    p.add_argument("--out", required=True, help="PNG file to write")
    _add_long_flags(p)
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


def _keep_caches_out_of_home():
    """Run from a checkout, matplotlib keeps its cache in .cache/ there (as under make), not in $HOME."""
    if "MPLCONFIGDIR" in os.environ:
        return
    checkout = Path(__file__).resolve().parent.parent
    if (checkout / "pyproject.toml").is_file() and os.access(checkout, os.W_OK):
        os.environ["MPLCONFIGDIR"] = str(checkout / ".cache" / "matplotlib")


def main(argv=None):
    args = build_parser().parse_args(argv)
    _keep_caches_out_of_home()
    from .checkpoint import CheckpointError
    try:
        status = args.func(args)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except (UserError, CheckpointError, ValueError, TypeError, FileNotFoundError, UnicodeDecodeError) as exc:
        if os.environ.get("NUMPY_TRANSFORMER_DEBUG"):
            raise  # the full traceback, for developers
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return status or 0
