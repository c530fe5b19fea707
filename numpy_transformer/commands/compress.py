"""``python -m numpy_transformer compress <action>``: make a trained classifier smaller (seed §2.1).

Actions (each reads a float32 checkpoint written by ``train`` or ``demo``):

  prune     zero the smallest weights (per matrix or global), optionally
            gradually and with a masked fine-tune; saved as bitmap + values
  heads     remove the least important attention heads (Michel et al. 2019)
            and/or feed-forward neurons, then fine-tune briefly
  quantize  int8 (store int8, compute float32 or int8) or binary weights,
            post-training or quantization-aware (``--qat-steps``)
  distill   train a small student from a teacher's soft or hard labels
  report    file size, parameters, accuracy, AUC and inference time of checkpoints

Every output is written atomically and loads with ``predict`` and ``evaluate``.
Fine-tunes are counted in steps, so a run gives the same model on every machine.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from ..cli import UserError, _add_model_flags, _load_data, _print_metrics


def _check_out(path):
    """Refuse an output that cannot be written before any work is done."""
    out = Path(path)
    if out.is_dir():
        raise UserError(f"--out: {str(out)!r} is a folder; give a file name such as {str(out / 'model.npz')!r}")
    if out.suffix.lower() != ".npz":
        raise UserError(f"--out: expected a file name ending in .npz, got {str(out)!r}")
    parent = out.parent if str(out.parent) else Path(".")
    if parent.exists() and not parent.is_dir():
        raise UserError(f"--out: {str(parent)!r} is a file, not a folder")
    return out


def _fraction(name, value, high_inclusive=False):
    ok = 0.0 <= value <= 1.0 if high_inclusive else 0.0 <= value < 1.0
    if not ok:
        raise UserError(f"{name}: expected a fraction in [0, 1{']' if high_inclusive else ')'}, got {value:g}")


def _non_negative(name, value):
    if value < 0:
        raise UserError(f"{name}: expected a number of steps >= 0, got {value}")


def _load_float_model(path):
    """A float32 classifier checkpoint: (model, tokenizer). Compressed files are refused (compress once)."""
    from ..checkpoint import load
    from ..compression import is_compressed
    from ..models import TransformerClassifier
    from ..tokenizer import CharTokenizer
    if not Path(path).exists():
        raise UserError(f"checkpoint {str(path)!r} does not exist (train one with "
                        f"`python -m numpy_transformer train --out DIR`)")
    if is_compressed(path):
        raise UserError(f"checkpoint {str(path)!r} is already compressed; start from the float32 checkpoint")
    ckpt = load(path)
    if not isinstance(ckpt.model, TransformerClassifier):
        raise UserError(f"checkpoint {str(path)!r} holds a {type(ckpt.model).__name__}; expected a classifier")
    if ckpt.tokenizer is None:
        raise UserError(f"checkpoint {str(path)!r} carries no tokenizer, so it cannot read text")
    return ckpt.model, CharTokenizer.from_dict(ckpt.tokenizer)


def _finetune_config(args, model, steps):
    from ..compression import FinetuneConfig
    return FinetuneConfig(steps=steps, batch_size=args.batch_size, lr=args.lr, max_len=model.config["max_len"],
                          seed=args.seed)


def _summary(path, model, tok, splits, args):
    from ..compression import count_parameters
    from ..train import evaluate
    result = evaluate(model, splits["valid"], tok, max_len=model.config["max_len"])
    print(f"wrote {path} ({path.stat().st_size:,} bytes, {count_parameters(model):,} parameters); "
          f"validation accuracy {result['accuracy']:.4f}, AUC {result['auc']:.4f}")


def cmd_prune(args):
    from .. import compression as C
    _fraction("--sparsity", args.sparsity)
    _non_negative("--finetune-steps", args.finetune_steps)
    out = _check_out(args.out)
    model, tok = _load_float_model(args.checkpoint)
    splits = _load_data(args)
    config = _finetune_config(args, model, args.finetune_steps)
    if args.gradual:
        if args.finetune_steps < 20:
            raise UserError("--gradual: needs --finetune-steps of at least 20 (the sparsity rises over them)")
        end = int(0.75 * args.finetune_steps)          # then a quarter of the steps at the final sparsity
        schedule = lambda step: C.cubic_sparsity(step, args.sparsity, 0, end)   # noqa: E731
        C.finetune(model, splits["train"], tok, config, sparsity_schedule=schedule, log=print)
        masks = C.magnitude_masks(model, args.sparsity, args.scope)
        C.apply_masks(model, masks)
    else:
        masks = C.magnitude_masks(model, args.sparsity, args.scope)
        C.apply_masks(model, masks)
        if args.finetune_steps:
            C.finetune(model, splits["train"], tok, config, masks=masks, log=print)
    print(f"sparsity of the weight matrices: {C.sparsity_of(model):.3f}")
    C.save_compressed(out, model, tok, encoding=args.encoding, method=f"prune {args.scope} {args.sparsity:g}")
    _summary(out, model, tok, splits, args)


def cmd_heads(args):
    from .. import compression as C
    _fraction("--fraction", args.fraction)
    _fraction("--ffn-fraction", args.ffn_fraction)
    _non_negative("--finetune-steps", args.finetune_steps)
    out = _check_out(args.out)
    model, tok = _load_float_model(args.checkpoint)
    splits = _load_data(args)
    max_len = model.config["max_len"]
    if args.fraction > 0:
        importance = C.head_importance(model, splits["valid"], tok, max_len=max_len, max_batches=args.importance_batches)
        np.set_printoptions(precision=3, suppress=True)
        print(f"head importance |dL/dxi| (rows = layers, normalised per layer):\n{importance}")
        remove = C.heads_to_prune(importance, args.fraction)
        print(f"removing heads {remove}")
        model = C.prune_heads(model, remove)
    if args.ffn_fraction > 0:
        model = C.prune_ffn(model, args.ffn_fraction)
    print(f"structure: {C.structure_of(model)}")
    if args.finetune_steps:
        C.finetune(model, splits["train"], tok, _finetune_config(args, model, args.finetune_steps), log=print)
    C.save_compressed(out, model, tok, encoding="float32",
                      method=f"heads {args.fraction:g} ffn {args.ffn_fraction:g}")
    _summary(out, model, tok, splits, args)


def cmd_quantize(args):
    from .. import compression as C
    _non_negative("--qat-steps", args.qat_steps)
    out = _check_out(args.out)
    if args.compute == "int8" and args.to != "int8":
        raise UserError(f"--compute int8: only with --to int8, got --to {args.to}")
    model, tok = _load_float_model(args.checkpoint)
    splits = _load_data(args)
    if args.qat_steps:
        C.finetune(model, splits["train"], tok, _finetune_config(args, model, args.qat_steps), qat=args.to, log=print)
    encodings = {name: "binary" for name, _ in C.qat_targets(model, "binary")} if args.to == "binary" else None
    method = f"{args.to} {'QAT' if args.qat_steps else 'post-training'}, compute {args.compute}"
    C.save_compressed(out, model, tok, encoding="int8", encodings=encodings, compute=args.compute, method=method)
    loaded = C.load_compressed(out).model
    _summary(out, loaded, tok, splits, args)


def cmd_distill(args):
    from .. import checkpoint
    from .. import compression as C
    from ..models import TransformerClassifier
    _fraction("--alpha", args.alpha, high_inclusive=True)
    _non_negative("--steps", args.steps)
    if not args.temperature > 0:
        raise UserError(f"--temperature: expected a positive number, got {args.temperature:g}")
    out = _check_out(args.out)
    teacher, tok = _load_float_model(args.teacher)
    splits = _load_data(args)
    max_len = teacher.config["max_len"]
    try:
        student = TransformerClassifier(
            vocab_size=tok.vocab_size, num_classes=teacher.config["num_classes"], d_model=args.d_model,
            n_heads=args.heads, n_layers=args.layers, d_ff=args.d_ff, max_len=max_len, dropout=args.dropout,
            norm=args.norm, pooling=args.pooling, seed=args.seed)
    except ValueError as exc:
        raise UserError(f"student: {exc}") from None
    ratio = student.num_parameters() / teacher.num_parameters()
    print(f"teacher {teacher.num_parameters():,} parameters, student {student.num_parameters():,} ({ratio:.1%})")
    train = splits["train"]
    views = " + the opening and closing clauses of long reviews (--length-mix)" if args.length_mix else ""
    labels = {"soft": "the teacher's soft labels mixed with the true ones", "hard": "the teacher's argmax",
              "none": "the true labels only (the control)"}[args.mode]
    print(f"training texts: {len(train):,} (the training split{views}); learning from {labels}")
    logits = None
    if args.mode != "none":
        logits = C.teacher_logits(teacher, train, tok, max_len=max_len)
    config = C.FinetuneConfig(steps=args.steps, batch_size=args.batch_size, lr=args.lr, max_len=max_len,
                              seed=args.seed, warmup_steps=100, temperature=args.temperature, alpha=args.alpha)
    C.finetune(student, splits["train"], tok, config, teacher_logits=logits, hard_labels=args.mode == "hard", log=print)
    checkpoint.save(out, student, tokenizer=tok.to_dict(),
                    extra={"distillation": {"teacher": str(args.teacher), "mode": args.mode,
                                            "temperature": args.temperature, "alpha": args.alpha,
                                            "steps": args.steps, "length_mix": args.length_mix}})
    _summary(out, student, tok, splits, args)


def cmd_report(args):
    from .. import compression as C
    from ..cli import _load_checkpoint
    from ..data import load_corpus
    from ..train import evaluate
    if args.timing_reviews < 1:
        raise UserError(f"--timing-reviews: expected a positive number of reviews, got {args.timing_reviews}")
    splits = _load_data(args) if args.data else load_corpus()
    data = splits[args.split]
    texts = data.texts[:args.timing_reviews]
    print(f"{args.split} split, {len(data)} reviews; times on the first {len(texts)} reviews")
    print(f"{'checkpoint':40s} {'bytes':>11s} {'parameters':>11s} {'accuracy':>9s} {'AUC':>7s} "
          f"{'ms/review b=1':>14s} {'s/1000 b=64':>12s}")
    for path in args.checkpoints:
        model, tok, _ = _load_checkpoint(path)
        max_len = model.config["max_len"]
        result = evaluate(model, data, tok, max_len=max_len)
        t1 = C.time_inference(model, tok, texts, 1, max_len)
        t64 = C.time_inference(model, tok, texts, 64, max_len)
        print(f"{str(path)[-40:]:40s} {Path(path).stat().st_size:>11,d} {C.count_parameters(model):>11,d} "
              f"{result['accuracy']:>9.4f} {result['auc']:>7.4f} {t1 * 1e3:>14.2f} {t64 * 1e3:>12.2f}")
    if args.verbose:
        _print_metrics(result)


def _add_finetune_flags(p, steps_flag, default_steps):
    g = p.add_argument_group("fine-tuning (counted in steps)")
    g.add_argument(steps_flag, type=int, default=default_steps, help=f"training steps (default {default_steps})")
    g.add_argument("--batch-size", type=int, default=32)
    g.add_argument("--lr", type=float, default=3e-4, help="peak learning rate of AdamW (default 3e-4)")
    g.add_argument("--seed", type=int, default=0)
    p.add_argument("--data", help="a TSV/CSV of text<TAB>label instead of the built-in corpus")


def register(sub):
    p = sub.add_parser("compress", help="prune, quantize or distill a trained classifier (seed §2.1)",
                       description=__doc__.split("\n\n")[0])
    actions = p.add_subparsers(dest="action", required=True)

    a = actions.add_parser("prune", help="magnitude pruning, saved as bitmap + values")
    a.add_argument("checkpoint")
    a.add_argument("--sparsity", type=float, required=True, help="fraction of weights to zero, in [0, 1)")
    a.add_argument("--scope", choices=["layer", "global"], default="layer",
                   help="the same fraction in every matrix (default) or one global threshold")
    a.add_argument("--gradual", action="store_true",
                   help="raise the sparsity during the fine-tune with the cubic schedule (Zhu & Gupta 2017)")
    a.add_argument("--encoding", choices=["sparse", "int8_sparse"], default="sparse",
                   help="float32 values (default) or int8 values of the survivors")
    a.add_argument("--out", required=True, help="the .npz file to write")
    _add_finetune_flags(a, "--finetune-steps", 0)
    a.set_defaults(func=cmd_prune)

    a = actions.add_parser("heads", help="remove attention heads (and feed-forward neurons) for real")
    a.add_argument("checkpoint")
    a.add_argument("--fraction", type=float, default=0.5, help="fraction of all heads to remove (default 0.5)")
    a.add_argument("--ffn-fraction", type=float, default=0.0, help="fraction of feed-forward neurons to remove")
    a.add_argument("--importance-batches", type=int, default=20,
                   help="validation batches to average |dL/dxi| over (default 20)")
    a.add_argument("--out", required=True, help="the .npz file to write")
    _add_finetune_flags(a, "--finetune-steps", 200)
    a.set_defaults(func=cmd_heads)

    a = actions.add_parser("quantize", help="int8 or binary weights, post-training or quantization-aware")
    a.add_argument("checkpoint")
    a.add_argument("--to", choices=["int8", "binary"], default="int8")
    a.add_argument("--compute", choices=["float32", "int8"], default="float32",
                   help="store int8 and compute in float32 (default), or multiply in int8 (int32 sums)")
    a.add_argument("--out", required=True, help="the .npz file to write")
    _add_finetune_flags(a, "--qat-steps", 0)
    a.set_defaults(func=cmd_quantize)

    a = actions.add_parser("distill", help="train a small student from a teacher checkpoint")
    a.add_argument("teacher")
    a.add_argument("--mode", choices=["soft", "hard", "none"], default="soft",
                   help="soft labels (T²·KL mixed with the labels by --alpha), the teacher's argmax, or none "
                        "(the student alone: the control)")
    a.add_argument("--temperature", type=float, default=2.0)
    a.add_argument("--alpha", type=float, default=0.9,
                   help="weight of the soft-label loss (default 0.9, chosen on validation; README)")
    a.add_argument("--length-mix", action=argparse.BooleanOptionalAction, default=False,
                   help="also train on the opening and closing clauses of every long training review "
                        "(data.short_views, 10,661 extra texts on the corpus), labelled by the teacher "
                        "(default off: on validation they did not help; README)")
    a.add_argument("--out", required=True, help="the .npz file to write")
    _add_model_flags(a)
    a.set_defaults(d_model=48, heads=4, layers=2, d_ff=192)
    _add_finetune_flags(a, "--steps", 2000)
    a.set_defaults(lr=1e-3)
    a.set_defaults(func=cmd_distill)

    a = actions.add_parser("report", help="size, parameters, accuracy, AUC and inference time of checkpoints")
    a.add_argument("checkpoints", nargs="+")
    a.add_argument("--split", choices=["train", "valid", "test"], default="test")
    a.add_argument("--timing-reviews", type=int, default=256, help="reviews to time inference on (default 256)")
    a.add_argument("--data", help="a TSV/CSV instead of the built-in corpus")
    a.add_argument("--verbose", action="store_true", help="also print the last checkpoint's full metrics")
    a.set_defaults(func=cmd_report)
