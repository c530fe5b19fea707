"""`finetune` and `domains`: the transfer-learning chapter's commands (seed §2.2, numpy_transformer/transfer.py).

    python -m numpy_transformer finetune --init-from notebooks/assets/lm_small.npz --steps 600 --out runs/finetune
    python -m numpy_transformer finetune --init-from CKPT --freeze-encoder ...      # a linear probe
    python -m numpy_transformer domains                                              # the domain rule's counts
"""

from __future__ import annotations

import sys
import time
from pathlib import Path


def register(sub):
    # Importing the chapter registers its model classes with `checkpoint.load`, so that `predict`,
    # `evaluate` and `attention` open fine-tuned (TransferClassifier) and MLM checkpoints too.
    from .. import mlm, transfer  # noqa: F401
    p = sub.add_parser("finetune", help="fine-tune a classifier from a pre-trained checkpoint (budget in steps)")
    p.add_argument("--init-from", required=True, metavar="CKPT",
                   help="a pre-trained causal LM (GPT-style fine-tuning), MLM encoder (BERT-style) or classifier")
    p.add_argument("--data", help="your own TSV/CSV (text<TAB>label); default: the review corpus")
    p.add_argument("--steps", type=int, default=600, help="training steps (default 600)")
    p.add_argument("--eval-every", type=int, default=100, help="validate every N steps; the best is kept")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--lr", type=float, default=5e-4)
    p.add_argument("--warmup", type=int, default=50)
    p.add_argument("--layer-decay", type=float, default=1.0,
                   help="layer-wise LR decay: block l of L trains at lr * decay^(L-l) (default 1: off; with a "
                        "few thousand labels or fewer, 0.7 was best on validation: README, Transfer learning)")
    p.add_argument("--freeze-encoder", action="store_true", help="train the head only (a linear probe)")
    p.add_argument("--unfreeze-every", type=int, default=0,
                   help="gradual unfreezing: one more block from the top every N steps (default 0: off)")
    p.add_argument("--pooling", choices=["mean", "last", "cls"], default=None,
                   help="default mean (see transfer.TransferClassifier for why)")
    p.add_argument("--bidirectional", action="store_true",
                   help="from a causal LM: drop its causal mask, so every character reads the whole review "
                        "(default: keep it, GPT-style; README, Transfer learning, compares the two)")
    p.add_argument("--dropout", type=float, default=None, help="default: the pre-trained model's")
    p.add_argument("--max-len", type=int, default=128)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="runs/finetune", help="output folder (default runs/finetune)")
    p.add_argument("--report-test", action="store_true", help="also print the test split's metrics at the end")
    p.set_defaults(func=cmd_finetune)

    d = sub.add_parser("domains", help="how many reviews the keyword rule puts in each domain")
    d.set_defaults(func=cmd_domains)


def cmd_finetune(args):
    from .. import checkpoint
    from ..cli import UserError, _load_data, _print_metrics
    from ..transfer import FinetuneConfig, classifier_from_pretrained, evaluate, finetune

    from .. import runs
    runs.check_flags(args, extra={"--eval-every": runs.integer(1, meaning="steps between validations"),
                                  "--layer-decay": runs.real(0.0, 1.0, low_open=True, meaning="a decay factor"),
                                  "--unfreeze-every": runs.integer(0, meaning="steps (0: off)"),
                                  "--dropout": runs.probability("a dropout probability") if args.dropout
                                  is not None else runs.real(allow_none=True)})
    init = Path(args.init_from)
    if not init.is_file():
        raise UserError(f"--init-from: no such file {str(init)!r}")
    out_dir = runs.check_output_dir(args.out)
    config = FinetuneConfig(steps=args.steps, batch_size=args.batch_size, lr=args.lr, warmup_steps=args.warmup,
                            eval_every=args.eval_every, max_len=args.max_len, layer_decay=args.layer_decay,
                            freeze_encoder=args.freeze_encoder, unfreeze_every=args.unfreeze_every, seed=args.seed)
    t0 = time.perf_counter()
    model, tok, provenance = classifier_from_pretrained(init, pooling=args.pooling, dropout=args.dropout,
                                                        seed=args.seed, causal=False if args.bidirectional else None)
    if args.max_len > model.max_len:
        raise UserError(f"--max-len: the pre-trained model reads at most {model.max_len} tokens, got {args.max_len}")
    splits = _load_data(args)
    print(f"{provenance['style']}-style fine-tuning from {init} ({provenance['init_class']}, "
          f"{provenance['copied']} tensors copied, fresh head); {model.num_parameters():,} parameters; "
          f"train {len(splits['train'])}, validation {len(splits['valid'])}")
    path = out_dir / "classifier.npz"

    def save_best(model, step, result):           # written atomically each time validation improves
        checkpoint.save(path, model, tokenizer=tok,
                        extra={**provenance, "best_step": step, "valid_accuracy": result["accuracy"],
                               "data": args.data or "corpus", "finetune": vars(config)})

    with runs.InterruptGuard() as guard:          # Ctrl-C: stop after the step; the best checkpoint is on disk
        history = finetune(model, splits["train"], splits["valid"], tok, config, on_best=save_best,
                           should_stop=lambda: guard.requested)
    if history.stopped_early:
        print(f"interrupted after step {history.step[-1] if history.step else 0}; the best checkpoint so far "
              f"is {path}", file=sys.stderr)
    print(f"best validation accuracy {max(history.valid_acc):.4f} at step {history.best_step} of {args.steps}; "
          f"wrote {path}")
    if args.report_test:
        print("test split:")
        _print_metrics(evaluate(model, splits["test"], tok, max_len=args.max_len))
    print(f"Done in {time.perf_counter() - t0:.0f}s.")


def cmd_domains(args):
    from ..data import load_corpus
    from ..transfer import DOMAIN_KEYWORDS, domain_indices
    print("keywords: " + "; ".join(f"{name}: {' '.join(words)}" for name, words in DOMAIN_KEYWORDS.items()))
    print(f"{'split':8s}" + "".join(f"{k:>9s}" for k in (*DOMAIN_KEYWORDS, "none", "several")))
    for name, split in load_corpus().items():
        counts = domain_indices(split)[1]
        print(f"{name:8s}" + "".join(f"{counts[k]:9d}" for k in (*DOMAIN_KEYWORDS, "none", "several")))
