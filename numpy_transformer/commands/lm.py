"""The language-model chapter's commands: ``pretrain`` and ``generate``.

    python -m numpy_transformer pretrain --out runs/lm                 # 1,500 steps of the reference size
    python -m numpy_transformer pretrain --out runs/lm --resume        # continue exactly where it stopped
    python -m numpy_transformer generate runs/lm/best.npz "这家酒店" --strategy top-p --top-p 0.9 --seed 0
"""

from __future__ import annotations

from pathlib import Path

from ..cli import UserError


# --------------------------------------------------------------------------- #
# pretrain
# --------------------------------------------------------------------------- #

#: The model's shape flags of `pretrain`, their defaults, and the config key each sets. They are None on the
#: command line until resolved, so that --init-from can tell a flag the user gave from a default.
SHAPE_FLAGS = {"d_model": 128, "heads": 4, "layers": 4, "d_ff": 512, "max_len": 128, "min_freq": 2}
_CONFIG_KEY = {"d_model": "d_model", "heads": "n_heads", "layers": "n_layers", "d_ff": "d_ff", "max_len": "max_len"}


def _flag(name):
    return "--" + name.replace("_", "-")


def _initial_model(args, objective):
    """The model and vocabulary to continue from (--init-from): a pre-training checkpoint, or one clear error.

    Continuing a language model on the review text alone is task-adaptive pre-training (Gururangan et al.
    2020): the weights and the vocabulary come from the file; the shape flags, if given, must agree with it.
    """
    from ..checkpoint import load
    from ..mlm import TransformerMLM
    from ..models import TransformerLM
    from ..tokenizer import CharTokenizer
    path = Path(args.init_from)
    if not path.is_file():
        raise UserError(f"--init-from: no such file {str(path)!r} (a checkpoint of `pretrain`, e.g. "
                        f"notebooks/assets/lm_small.npz)")
    try:
        saved = load(path)
    except (OSError, ValueError, KeyError) as error:
        raise UserError(f"--init-from: {str(path)!r} is not a checkpoint this project can read ({error})")
    wanted = TransformerMLM if objective == "mlm" else TransformerLM
    if type(saved.model) is not wanted or saved.tokenizer is None:
        raise UserError(f"--init-from: {str(path)!r} holds a {type(saved.model).__name__}; --objective "
                        f"{objective} continues a {wanted.__name__} saved by `pretrain --objective {objective}`")
    for name, key in _CONFIG_KEY.items():
        given = getattr(args, name)
        if given is not None and given != saved.model.config[key]:
            raise UserError(f"{_flag(name)}: {given} differs from the {saved.model.config[key]} of --init-from "
                            f"{str(path)!r}; leave it out (the shape comes from the file)")
    if args.min_freq is not None:
        raise UserError("--min-freq: the vocabulary comes from --init-from; leave it out")
    # Rebuilt with this run's dropout (the file's model may have been trained without), then the weights.
    model = wanted(**{**saved.model.config, "dropout": args.dropout, "seed": args.seed})
    model.load_state_dict(saved.model.state_dict())
    return model, CharTokenizer.from_dict(saved.tokenizer)


def cmd_pretrain(args):
    from .. import corpus as C
    from ..models import TransformerLM
    from .. import runs
    from ..checkpoint import file_md5
    from ..pretrain import PretrainConfig, pretrain

    shape_rules = {flag: runs.Rule(**{**vars(runs.COMMON_RULES[flag]), "allow_none": True})
                   for flag in ("--d-model", "--heads", "--layers", "--d-ff", "--max-len", "--min-freq")}
    runs.check_flags(args, extra={**shape_rules,
                                  "--min-lr": runs.real(0.0, meaning="learning rate"),
                                  "--weight-decay": runs.real(0.0),
                                  "--clip": runs.real(0.0, low_open=True, meaning="largest gradient norm"),
                                  "--eval-every": runs.integer(1, meaning="steps between held-out evaluations"),
                                  "--eval-tokens": runs.integer(1, allow_none=True)})
    out = Path(args.out)
    last = out / "last.npz"
    if out.exists() and not out.is_dir():
        raise UserError(f"--out: {str(out)!r} is a file; expected a folder for the checkpoints")
    if args.resume and not last.is_file():
        raise UserError(f"--resume: no resume state {str(last)!r}; start a run with `pretrain --out {out}` first")
    if not args.resume and last.is_file():
        raise UserError(f"--out: {str(out)!r} already holds a run (last.npz); continue it with --resume "
                        f"or choose another folder")
    if args.resume and (args.init_from is not None or args.text is not None):
        raise UserError("--resume: the run's --init-from and --text are in its resume state; leave them out")
    text = args.text or "all"
    init = None
    if args.init_from is not None:
        model, tok = _initial_model(args, args.objective)
        init = {"init_from": str(args.init_from), "init_md5": file_md5(args.init_from)}
    config = PretrainConfig(steps=args.steps, batch_size=args.batch_size, lr=args.lr, min_lr=args.min_lr,
                            warmup_steps=args.warmup, weight_decay=args.weight_decay, clip=args.clip,
                            eval_every=args.eval_every, eval_tokens=args.eval_tokens, objective=args.objective,
                            seed=args.seed, time_budget=args.time_budget, text=text, init=init)
    corpus = C.load_pretrain_corpus()
    if args.resume:
        from ..checkpoint import load
        from ..tokenizer import CharTokenizer
        saved = load(last)
        tok = CharTokenizer.from_dict(saved.tokenizer)
        model = saved.model
        text = saved.extra.get("pretrain", {}).get("config", {}).get("text", "all")
    elif init is None:
        shape = {name: default if getattr(args, name) is None else getattr(args, name)
                 for name, default in SHAPE_FLAGS.items()}
        tok = C.build_vocabulary(corpus, min_freq=shape["min_freq"])
        from ..mlm import TransformerMLM
        model_class = TransformerMLM if args.objective == "mlm" else TransformerLM   # MLM: bidirectional
        model = model_class(tok.vocab_size, d_model=shape["d_model"], n_heads=shape["heads"],
                            n_layers=shape["layers"], d_ff=shape["d_ff"], max_len=shape["max_len"],
                            dropout=args.dropout, norm="pre", activation="gelu", tie_weights=True, seed=args.seed)
    # The review text alone is chosen on the review validation text alone (the news is not the task).
    train = C.token_stream(C.training_texts(corpus, text), tok)
    heldout = {name: C.token_stream(corpus.heldout[name], tok) for name in C.heldout_names(text)}
    print(f"pre-training text ({text}) {len(train):,} tokens; held-out " +
          ", ".join(f"{k} {len(v):,}" for k, v in heldout.items()) +
          f"; vocabulary {tok.vocab_size:,}; {model.num_parameters():,} parameters" +
          (f"; starting from {args.init_from}" if init else ""))
    try:
        history = pretrain(model, tok, train, heldout, config, out_dir=out,
                           resume_from=last if args.resume else None, progress=not args.no_progress)
    except KeyboardInterrupt:
        print(f"interrupted: the state is in {last}; continue with --resume")
        raise
    if history.stopped_because.startswith("time budget"):
        print(f"note: {history.stopped_because}")
    print(f"wrote {out / 'best.npz'} (step {history.best_step}) and {last}")


# --------------------------------------------------------------------------- #
# generate
# --------------------------------------------------------------------------- #

def cmd_generate(args):
    import numpy as np

    from ..cli import _open_checkpoint
    from ..generation import generate
    from ..tokenizer import BOS_ID, CLS_ID, EOS_ID, PAD_ID, UNK_ID

    if not args.prompt.strip():
        raise UserError("PROMPT is empty; give the first characters of the text to continue, e.g. \"这家酒店\"")
    if args.temperature <= 0:
        raise UserError(f"--temperature: expected a number > 0, got {args.temperature:g}")
    if args.top_p is not None and not 0 < args.top_p <= 1:
        raise UserError(f"--top-p: expected a number in (0, 1], got {args.top_p:g}")
    if args.strategy == "top-p" and args.top_p is None:
        args.top_p = 0.9
    if args.repetition_penalty <= 0:
        raise UserError(f"--repetition-penalty: expected a number > 0 (1 = off), got {args.repetition_penalty:g}")
    if args.max_new_tokens < 0:
        raise UserError(f"--max-new-tokens: expected a non-negative integer, got {args.max_new_tokens}")
    if args.num_beams < 1:
        raise UserError(f"--num-beams: expected a positive integer, got {args.num_beams}")
    model, tok, _ = _open_checkpoint(args.checkpoint)
    if not hasattr(model, "forward_cached"):
        raise UserError(f"checkpoint {args.checkpoint!r} holds a {type(model).__name__}, not a language model; "
                        f"generate needs one made by `python -m numpy_transformer pretrain`")
    if args.top_k is not None and not 1 <= args.top_k <= tok.vocab_size:
        raise UserError(f"--top-k: expected an integer in [1, {tok.vocab_size}] (the vocabulary size), "
                        f"got {args.top_k}")
    if args.strategy == "top-k" and args.top_k is None:
        args.top_k = min(40, tok.vocab_size)
    if tok.unknown_fraction(args.prompt) == 1.0:
        raise UserError(f"PROMPT {args.prompt!r} has only characters the model never saw; "
                        f"give some Chinese text it knows")
    ids = [EOS_ID] + tok.encode(args.prompt)       # in pre-training every text follows an [EOS]
    banned = [PAD_ID, UNK_ID, CLS_ID, BOS_ID] + [tok.token_to_id(t) for t in tok.extra_special]
    out = generate(model, ids, args.max_new_tokens, strategy=args.strategy, temperature=args.temperature,
                   top_k=args.top_k, top_p=args.top_p, repetition_penalty=args.repetition_penalty,
                   rng=np.random.default_rng(args.seed), banned_ids=banned, use_cache=not args.no_cache,
                   num_beams=args.num_beams, length_penalty=args.length_penalty)
    print(tok.decode(tok.encode(args.prompt)) + tok.decode(out))


# --------------------------------------------------------------------------- #
# registration
# --------------------------------------------------------------------------- #

def register(sub):
    from ..pretrain import OBJECTIVES
    p = sub.add_parser("pretrain", help="pre-train a character language model on the news + review corpus")
    g = p.add_argument_group("model")
    g.add_argument("--d-model", type=int, default=None, help="model width D (default 128)")
    g.add_argument("--heads", type=int, default=None, help="attention heads H (default 4)")
    g.add_argument("--layers", type=int, default=None, help="Transformer blocks L (default 4)")
    g.add_argument("--d-ff", type=int, default=None, help="feed-forward width F (default 512)")
    g.add_argument("--max-len", type=int, default=None, help="context length T of the packed chunks (default 128)")
    g.add_argument("--dropout", type=float, default=0.0,
                   help="dropout (default 0: 1,500 steps see the text about twice, far from overfitting)")
    g.add_argument("--min-freq", type=int, default=None, help="keep characters seen at least this often (default 2)")
    g.add_argument("--init-from", default=None, metavar="CKPT",
                   help="continue from this pre-trained model (its weights, shape and vocabulary), e.g. on "
                        "--text reviews: task-adaptive pre-training")
    g = p.add_argument_group("training")
    g.add_argument("--steps", type=int, default=1500, help="the budget, in updates (default 1500)")
    g.add_argument("--batch-size", type=int, default=32)
    g.add_argument("--lr", type=float, default=1e-3, help="peak learning rate of AdamW (default 1e-3)")
    g.add_argument("--min-lr", type=float, default=1e-4, help="learning rate at the end of the cosine (default 1e-4)")
    g.add_argument("--warmup", type=int, default=100, help="warm-up steps (default 100)")
    g.add_argument("--weight-decay", type=float, default=0.01)
    g.add_argument("--clip", type=float, default=1.0, help="gradient-norm clipping (default 1.0)")
    g.add_argument("--objective", choices=sorted(OBJECTIVES), default="causal", help="what to predict (default causal)")
    g.add_argument("--text", choices=("all", "reviews"), default=None,
                   help="all: the news and the review training texts (default); reviews: the review training "
                        "texts only, the best step chosen on the review validation text")
    g.add_argument("--eval-every", type=int, default=250, help="held-out evaluation every N steps (default 250)")
    g.add_argument("--eval-tokens", type=int, default=None,
                   help="score only the first N tokens of each held-out set (default: all)")
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--time-budget", type=float, default=None,
                   help="stop after this many seconds of training, and say so (default: no limit)")
    p.add_argument("--out", default="runs/pretrain", help="output folder (default runs/pretrain)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out exactly where it stopped")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_pretrain)

    from ..generation import STRATEGIES
    p = sub.add_parser("generate", help="continue a prompt with a pre-trained language model")
    p.add_argument("checkpoint", help="a language-model checkpoint (pretrain's best.npz, notebooks/assets/lm_small.npz)")
    p.add_argument("prompt", help="the first characters of the text")
    p.add_argument("--strategy", choices=STRATEGIES, default="top-p", help="how to choose each token (default top-p)")
    p.add_argument("--temperature", type=float, default=0.8, help="divide the logits by this (default 0.8)")
    p.add_argument("--top-k", type=int, default=None, help="top-k: sample among the k most likely (default 40, at most the vocabulary)")
    p.add_argument("--top-p", type=float, default=None, help="top-p: the nucleus mass, in (0, 1] (default 0.9)")
    p.add_argument("--repetition-penalty", type=float, default=1.0, help="CTRL's penalty, 1 = off (default 1)")
    p.add_argument("--num-beams", type=int, default=4, help="beam: beams kept (default 4)")
    p.add_argument("--length-penalty", type=float, default=1.0, help="beam: score / length^alpha (default 1)")
    p.add_argument("--max-new-tokens", type=int, default=60, help="at most this many characters (default 60)")
    p.add_argument("--seed", type=int, default=0, help="seed of the sampling (default 0)")
    p.add_argument("--no-cache", action="store_true", help="recompute the whole window for every token")
    p.set_defaults(func=cmd_generate)
