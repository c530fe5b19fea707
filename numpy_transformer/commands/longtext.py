"""Long text (seed §3.3) on the command line: how `train`, `evaluate`, `predict` and `attention` read long texts.

The flags ``--long truncate|head-tail|chunk``, ``--stride`` and ``--aggregate``
(`longtext.add_long_flags`) are added to those four commands by cli.py; the
helpers here turn them into calls of `longtext.py`. A checkpoint trained with
``--long`` remembers the choice (``extra["long_text"]``), so ``evaluate`` and
``predict`` read long texts the same way unless told otherwise.

The chapter's own command, ``long-compare``, prints the comparison of the
README: truncation, head+tail and chunking (mean, max) on the test reviews
longer than a length, for one checkpoint.
"""

from __future__ import annotations

import numpy as np

from ..cli import UserError, _load_checkpoint, _load_data, _plot_attention


def long_text_choice(args, ckpt, max_len):
    """The long-text options (longtext.py) from the flags or the checkpoint; None for plain truncation."""
    from ..longtext import long_options
    try:
        mode, stride, aggregate, pool_u = long_options(args, (ckpt.extra or {}).get("long_text"), max_len)
    except ValueError as exc:
        raise UserError(str(exc)) from None
    if mode == "truncate":
        return None
    return {"mode": mode, "stride": stride, "aggregate": aggregate, "pool_u": pool_u}


def train_long_text(args, model, tok, splits):
    """After training: the chosen long-text reading, and the chunk attention pooling if asked for."""
    from ..longtext import fit_attention_pool, long_options
    args._training = True
    try:
        mode, stride, aggregate, _ = long_options(args, None, args.max_len)
    except ValueError as exc:
        raise UserError(str(exc)) from None
    if mode == "truncate":
        return None
    saved = {"mode": mode, "stride": stride, "aggregate": aggregate}
    if mode == "chunk" and aggregate == "attention":
        train = splits["train"]
        long_ones = [i for i, t in enumerate(train.texts) if len(t) > args.max_len - 1]
        print(f"learning the chunk attention pooling on the {len(long_ones)} training texts longer than the window")
        u = fit_attention_pool(model, tok, [train.texts[i] for i in long_ones], train.labels[long_ones],
                               args.max_len, stride, seed=args.seed, log=print)
        saved["attention_pool"] = [float(x) for x in u]
    return saved


def evaluate_long(model, data, tok, max_len, long_text):
    from ..longtext import evaluate_long
    return evaluate_long(model, data, tok, max_len, long_text["mode"], long_text["stride"], long_text["aggregate"],
                         long_text.get("pool_u", long_text.get("attention_pool")))


def plot_chunks(model, tok, text, out, max_len, long_text):
    """One attention map per chunk, and which chunk weighed most in the decision."""
    from ..longtext import chunk_texts, predict_long
    probs, info = predict_long(model, tok, [text], max_len, **long_text)
    chunks = chunk_texts(tok, text, max_len, long_text["stride"])
    label = int(np.argmax(probs[0]))
    if "chunk_weights" in info:
        drew, why = int(np.argmax(info["chunk_weights"])), "the largest attention-pooling weight"
    else:
        margin = info["chunk_logits"][:, label] - np.delete(info["chunk_logits"], label, axis=1).max(axis=1)
        drew, why = int(np.argmax(margin)), "the largest margin for the predicted class"
    for k, chunk in enumerate(chunks):
        grid, mean = _plot_attention(model, tok, chunk, out.parent, f"{out.stem}_chunk{k}", max_len)
        print(f"wrote {grid} and {mean} (chunk {k + 1} of {len(chunks)})")
    print(f"{len(chunks)} chunks; chunk {drew + 1} drew the decision ({why}): {chunks[drew][:30]}…")


def cmd_long_compare(args):
    from .. import longtext
    model, tok, ckpt = _load_checkpoint(args.checkpoint)
    max_len = model.config["max_len"]
    data = _load_data(args)[args.split]
    keep = [i for i, t in enumerate(data.texts) if len(t) > args.min_chars]
    if not keep:
        raise UserError(f"--min-chars: no {args.split} text is longer than {args.min_chars} characters")
    long_data = data.subset(np.array(keep))
    pool_u = ((ckpt.extra or {}).get("long_text") or {}).get("attention_pool")
    if args.stride is not None and not 1 <= args.stride <= max_len - 1:
        raise UserError(f"--stride: expected an integer in [1, max_len - 1 = {max_len - 1}], got {args.stride}")
    rows = longtext.compare_on_long(model, tok, long_data, max_len, args.stride, pool_u)
    print(f"{len(long_data)} {args.split} texts longer than {args.min_chars} characters; model window max_len={max_len}")
    print(f"  {'reading':22s} {'accuracy':>9s} {'F1':>7s} {'AUC':>7s}")
    for name, r in rows.items():
        print(f"  {name:22s} {r['accuracy']:9.4f} {r['f1']:7.4f} {r['auc']:7.4f}")


def register(sub):
    p = sub.add_parser("long-compare", help="truncation vs head+tail vs chunking on the long texts of a split")
    p.add_argument("checkpoint")
    p.add_argument("--min-chars", type=int, default=128, help="compare on texts longer than this (default 128)")
    p.add_argument("--split", choices=["train", "valid", "test"], default="test")
    p.add_argument("--stride", type=int, default=None, help="chunk stride in characters (default half a window)")
    p.add_argument("--data", help="a TSV/CSV instead of the built-in corpus")
    p.set_defaults(func=cmd_long_compare)
