"""Commands of the zero-shot / few-shot chapter (seed §2.3, notebook 13).

  zeroshot   label-word scores of a pre-trained language model, raw and calibrated:
             for the texts given, or (no texts) accuracy and AUC on validation and test
  fewshot    the whole experiment of notebook 13: accuracy-vs-k of prototypes, logistic
             regression on embeddings, TF-IDF + logistic regression and fine-tuning on the
             same draws, the zero-shot table; written to one JSON file
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np

from ..cli import UserError


def _load_lm(path):
    from ..checkpoint import load
    from ..models import TransformerLM
    from ..tokenizer import CharTokenizer
    if not Path(path).is_file():
        raise UserError(f"checkpoint {str(path)!r} does not exist (the pre-trained language model is "
                        f"notebooks/assets/lm_small.npz)")
    ckpt = load(path)
    if not isinstance(ckpt.model, TransformerLM):
        raise UserError(f"checkpoint {str(path)!r} holds a {type(ckpt.model).__name__}; this command needs a "
                        f"pre-trained language model (TransformerLM)")
    if ckpt.tokenizer is None:
        raise UserError(f"checkpoint {str(path)!r} carries no tokenizer, so it cannot read text")
    return ckpt.model.eval(), CharTokenizer.from_dict(ckpt.tokenizer)


def _label_words(args):
    from ..zeroshot import LabelWords
    if "{text}" not in args.template:
        raise UserError(f"--template: expected '{{text}}' where the review goes, got {args.template!r}")
    words = tuple(tuple(w for w in side.split(",") if w) for side in args.words)
    if any(not ws for ws in words):
        raise UserError(f"--words: expected two comma-separated lists of words (negative, positive), "
                        f"got {args.words}")
    return LabelWords(args.template, words)


def _check_vocabulary(tokenizer, label_words):
    from ..tokenizer import UNK_ID
    checks = [("--template", label_words.template.replace("{text}", ""))]
    checks += [("--words", w) for ws in label_words.words for w in ws]
    for name, text in checks:
        if text and UNK_ID in tokenizer.encode(text):
            raise UserError(f"{name}: {text!r} has characters the language model never saw")


def _write_json_atomically(path, data):
    """Temporary file in the same folder, then rename: a crash never leaves half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(data, f, ensure_ascii=False, indent=1)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)          # mkstemp makes it private (0600); a result file is not
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def cmd_zeroshot(args):
    from .. import zeroshot as Z
    lm, tok = _load_lm(args.checkpoint)
    lw = _label_words(args)
    _check_vocabulary(tok, lw)
    cf = Z.content_free_probs(lm, tok, lw)
    print(f"template {lw.name()}; content-free P = {np.round(cf, 3).tolist()} (inputs {list(Z.CONTENT_FREE_INPUTS)})")
    if args.texts:
        for i, text in enumerate(args.texts):
            if not text.strip():
                raise UserError(f"text {i + 1} is empty; give some characters to classify")
        p = Z.label_word_probs(Z.label_word_log_probs(lm, tok, args.texts, lw))
        q = Z.calibrate(p, cf)
        print("raw P(positive)\tcalibrated\tlabel\ttext")
        for text, raw, cal in zip(args.texts, p[:, 1], q[:, 1]):
            print(f"{raw:.3f}\t{cal:.3f}\t{'positive' if cal >= 0.5 else 'negative'}\t{text}")
        return
    from ..data import load_corpus
    splits = load_corpus()
    for split in ("valid", "test"):
        data = splits[split]
        p = Z.label_word_probs(Z.label_word_log_probs(lm, tok, data.texts, lw))
        for name, probs in (("raw", p), ("calibrated", Z.calibrate(p, cf))):
            r = Z.evaluate_scores(data.labels, np.log(probs))
            print(f"{split:5s} {name:10s} accuracy {r['accuracy']:.4f}  AUC {r['auc']:.4f}  "
                  f"predicted positive {float((probs.argmax(1) == 1).mean()):.3f}")


def _parse_ks(text):
    try:
        ks = tuple(int(k) for k in text.split(","))
    except ValueError:
        raise UserError(f"--ks: expected comma-separated integers such as 1,2,4,8, got {text!r}") from None
    if not ks or min(ks) < 1:
        raise UserError(f"--ks: expected positive integers, got {text!r}")
    return ks


def cmd_fewshot(args):
    from .. import zeroshot as Z
    ks = _parse_ks(args.ks)
    finetune_ks = _parse_ks(args.finetune_ks) if args.finetune_ks else ()
    for flag, value, least in (("--draws", args.draws, 1), ("--finetune-draws", args.finetune_draws, 0),
                               ("--pool", args.pool, 2), ("--finetune-steps", args.finetune_steps, 1),
                               ("--valid", args.valid, 2), ("--max-len", args.max_len, 8),
                               ("--finetune-test", args.finetune_test, 2)):
        if value < least:
            raise UserError(f"{flag}: expected an integer >= {least}, got {value}")
    try:
        lrs = tuple(float(x) for x in args.finetune_lrs.split(","))
    except ValueError:
        raise UserError(f"--finetune-lrs: expected comma-separated numbers, got {args.finetune_lrs!r}") from None
    if not lrs or min(lrs) <= 0:
        raise UserError(f"--finetune-lrs: expected positive learning rates, got {args.finetune_lrs!r}")
    from .. import runs
    # the output locations are checked before minutes of work, not after (runs.py)
    out = runs.check_output_file(args.out, "--out", ".json")
    if args.save_embeddings:
        runs.check_output_file(args.save_embeddings, "--save-embeddings", ".npz")
    lm, tok = _load_lm(args.checkpoint)
    from ..data import load_corpus
    corpus = load_corpus()
    pool = corpus["train"].subset(np.arange(min(args.pool, len(corpus["train"]))))
    fewest = int(pool.label_counts().min())
    if max(ks) > fewest:
        raise UserError(f"--ks: k={max(ks)} is more than the {fewest} examples of one class in the pool "
                        f"(--pool {args.pool})")
    valid = corpus["valid"].subset(np.arange(min(args.valid, len(corpus["valid"]))))
    splits = {"pool": (pool.texts, pool.labels), "valid": (valid.texts, valid.labels),
              "test": (corpus["test"].texts, corpus["test"].labels)}
    start = time.perf_counter()
    states = Z.embed_splits(lm, tok, {k: v[0] for k, v in splits.items()}, max_len=args.max_len, log=print)
    import hashlib
    result = {"arguments": {k: v for k, v in vars(args).items() if k not in ("func", "command")},
              "checkpoint_md5": hashlib.md5(Path(args.checkpoint).read_bytes()).hexdigest()}
    if not args.no_zero_shot:
        result["zero_shot"] = Z.zero_shot_experiment(lm, tok, splits, states, max_len=args.max_len)
    result["few_shot"] = Z.few_shot_experiment(lm, tok, splits, states, ks=ks, n_draws=args.draws, seed=args.seed,
                                               max_len=args.max_len, finetune_ks=finetune_ks,
                                               finetune_draws=args.finetune_draws, finetune_steps=args.finetune_steps,
                                               finetune_lrs=lrs, finetune_test=args.finetune_test)
    result["seconds"] = time.perf_counter() - start
    if args.save_embeddings:
        # the test texts' embeddings of the chosen variant, float16, for notebook 13's PCA and neighbours
        variant = tuple(result["few_shot"]["embedding_variant_key"])
        e = Z.embeddings_for(states["test"], variant, states["pool"]).astype(np.float16)
        pooling, layers, centred = variant
        center = Z.combine_layers(states["pool"][pooling], layers).mean(axis=0) if centred else \
            np.zeros(e.shape[1])
        path = Path(args.save_embeddings)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp.npz")
        np.savez_compressed(tmp, test=e, labels=corpus["test"].labels, center=center)
        os.replace(tmp, path)
        print(f"wrote {path}")
    _write_json_atomically(out, result)
    print(f"wrote {out} ({result['seconds']:.0f}s)")


def register(sub):
    from ..zeroshot import DEFAULT_TEMPLATES
    p = sub.add_parser("zeroshot", help="label-word scores of a pre-trained language model (no labels), "
                                        "raw and calibrated")
    p.add_argument("checkpoint", help="a pre-trained TransformerLM checkpoint (e.g. notebooks/assets/lm_small.npz)")
    p.add_argument("texts", nargs="*", help="texts to classify (none: accuracy on validation and test)")
    p.add_argument("--template", default=DEFAULT_TEMPLATES[0],
                   help="the prompt; {text} is the review, the label word follows (default %(default)r)")
    p.add_argument("--words", nargs=2, default=["差", "好"], metavar=("NEGATIVE", "POSITIVE"),
                   help="label words, comma-separated alternatives per class (default 差 好)")
    p.set_defaults(func=cmd_zeroshot)

    p = sub.add_parser("fewshot", help="notebook 13's experiment: accuracy vs k labelled examples per class, "
                                       "every method on the same draws, and the zero-shot table, as JSON")
    p.add_argument("checkpoint", help="a pre-trained TransformerLM checkpoint")
    p.add_argument("--out", default="runs/zeroshot/results.json", help="JSON file to write")
    p.add_argument("--ks", default="1,2,4,8,16,32,64", help="examples per class (default 1,2,4,8,16,32,64)")
    p.add_argument("--draws", type=int, default=50, help="random draws of the k examples per k (default 50)")
    p.add_argument("--finetune-ks", default="1,2,4,8,16,32,64",
                   help="the k at which the whole model is also fine-tuned ('' for none)")
    p.add_argument("--finetune-draws", type=int, default=1,
                   help="how many of the draws also fine-tune the whole model (slow; default 1)")
    p.add_argument("--finetune-steps", type=int, default=15, help="full-batch AdamW steps (default 15)")
    p.add_argument("--finetune-lrs", default="1e-4,1e-3",
                   help="fine-tuning learning rates to choose from on validation (default 1e-4,1e-3)")
    p.add_argument("--finetune-test", type=int, default=400,
                   help="fine-tuned models are scored on the first N test texts (default 400)")
    p.add_argument("--pool", type=int, default=1000, help="draw from the first N training reviews (default 1000)")
    p.add_argument("--valid", type=int, default=600,
                   help="choose on the first N validation reviews (default 600)")
    p.add_argument("--max-len", type=int, default=64, help="read at most this many tokens of a review (default 64)")
    p.add_argument("--save-embeddings", help="also write the test texts' embeddings (float16 .npz) here")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-zero-shot", action="store_true", help="skip the zero-shot table")
    p.set_defaults(func=cmd_fewshot)
