"""Every PNG in ``figures/``, regenerated from code.

    python -m numpy_transformer figures --out figures          # the real thing
    python -m numpy_transformer figures --out /tmp/f --quick   # a tiny model, for tests

``make_all`` writes the pictures the README and the notebooks show:

==================================== =====================================================
file                                 what it shows
==================================== =====================================================
pe_comparison.png                    correct sinusoidal PE next to the article's sin + cos (E1)
mask_padding.png                     a padding mask: [PAD] keys are hidden from every query
mask_causal.png                      a causal mask: query t sees keys <= t (E6)
mask_causal_padding.png              both combined with ``&``
attention_toy_sentence1.png          the article's worked example (4.3) with its own toy
                                     vectors + PE: the true T x T weights (W2)
attention_seed_sentence1.png         trained classifier, every layer and head, sentence 1
attention_seed_sentence1_mean.png    the same, averaged over layers and heads
attention_seed_sentence2.png         every layer and head, sentence 2
attention_seed_sentence2_mean.png    averaged, sentence 2
training_curves.png                  loss and validation accuracy of that training run
roc_test.png                         ROC curve on the test split
confusion_test.png                   confusion matrix on the test split, rates defined (E5)
fewshot_curves.png                   notebook 13: test accuracy vs k labelled reviews per class
zeroshot_calibration.png             notebook 13: label words before/after contextual calibration
==================================== =====================================================

The trained model is the small checkpoint committed at
``notebooks/assets/classifier_small.npz`` (its tokenizer and training history
are inside). With ``quick=True`` nothing is read from disk but the corpus: a
tiny classifier is trained for a few steps on a small slice, so that the
whole generator runs in seconds and a test can keep it from rotting.
(``figures/attention_cost.png`` comes from ``benchmarks/``, not from here.)
The two zero-/few-shot figures are drawn, in both modes, from the experiment's
shipped results, ``notebooks/assets/zeroshot_results.json`` (about 20 minutes
of compute to remake: see notebooks/assets/README.md).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

__all__ = ["FIGURE_NAMES", "DEFAULT_CHECKPOINT", "make_all", "model_name"]

FIGURE_NAMES = (
    "pe_comparison.png",
    "mask_padding.png",
    "mask_causal.png",
    "mask_causal_padding.png",
    "attention_toy_sentence1.png",
    "attention_seed_sentence1.png",
    "attention_seed_sentence1_mean.png",
    "attention_seed_sentence2.png",
    "attention_seed_sentence2_mean.png",
    "training_curves.png",
    "roc_test.png",
    "confusion_test.png",
    "fewshot_curves.png",
    "zeroshot_calibration.png",
)

#: Where the repository keeps the small trained classifier the figures are drawn from.
DEFAULT_CHECKPOINT = Path(__file__).resolve().parent.parent / "notebooks" / "assets" / "classifier_small.npz"

#: The zero-shot / few-shot experiment's results (python -m numpy_transformer fewshot ...).
DEFAULT_ZEROSHOT_RESULTS = DEFAULT_CHECKPOINT.parent / "zeroshot_results.json"

# The example the mask figures use: a short review padded to the batch's longest text.
_MASK_TEXTS = ("太无聊了", "我很喜欢阅读")


def _save(fig, path: Path) -> Path:
    import matplotlib.pyplot as plt

    from .viz import SAVE_DPI

    fig.savefig(path, dpi=SAVE_DPI, bbox_inches="tight")
    plt.close(fig)
    return path


# --------------------------------------------------------------------------- #
# Figures that need no trained model
# --------------------------------------------------------------------------- #

def _positional_encoding(out_dir: Path) -> list[Path]:
    from . import functional as F
    from . import viz

    T, D = 64, 64
    fig = viz.pe_comparison(F.sinusoidal_positional_encoding(T, D), F.seed_positional_encoding(T, D))
    fig.suptitle(f"Positional encoding, {T} positions x {D} dimensions (errata E1)")
    return [_save(fig, out_dir / "pe_comparison.png")]


def _masks(out_dir: Path) -> list[Path]:
    from . import functional as F
    from . import viz
    from .tokenizer import CharTokenizer

    tok = CharTokenizer.build(list(_MASK_TEXTS))
    ids, valid = tok.encode_batch(list(_MASK_TEXTS), max_len=32, add_cls=True)   # (2, T), (2, T)
    T = ids.shape[1]
    tokens = [tok.id_to_token(int(i)) for i in ids[0]]                           # the padded text
    padding = np.broadcast_to(F.padding_mask(valid)[0, 0], (T, T))               # (1, T) -> (T, T)
    causal = F.causal_mask(T)                                                    # (T, T)
    pictures = (
        ("mask_padding.png", padding, f"padding mask for {_MASK_TEXTS[0]!r} in a batch of {len(_MASK_TEXTS)}"),
        ("mask_causal.png", causal, "causal mask: query t sees keys 0..t"),
        ("mask_causal_padding.png", causal & padding, "causal & padding"),
    )
    return [_save(viz.mask_image(np.array(mask), tokens, title=title), out_dir / name)
            for name, mask, title in pictures]


def _toy_attention(out_dir: Path) -> list[Path]:
    from . import functional as F
    from . import viz
    from .worked_example import toy_attention, toy_embeddings, toy_words

    words = toy_words(0)                                                 # the article's words in sentence 1
    X = toy_embeddings(words)                                            # (T, 3), as printed in 4.3
    X = X + F.sinusoidal_positional_encoding(len(words), 3, dtype=np.float64)
    _, weights = toy_attention(X)                                        # (T, T), rows sum to 1
    fig = viz.attention_map(weights, words,
                            title="The article's example (4.3) computed:\n"
                                  r"$\mathrm{softmax}(QK^\top/\sqrt{3})$ with Q = K = V = toy vectors + PE")
    return [_save(fig, out_dir / "attention_toy_sentence1.png")]


# --------------------------------------------------------------------------- #
# Figures of a trained model
# --------------------------------------------------------------------------- #

def _quick_model():
    """A tiny classifier trained for a few steps on a slice of the corpus (for tests)."""
    from .data import load_corpus
    from .models import TransformerClassifier
    from .tokenizer import CharTokenizer
    from .train import TrainConfig, fit

    splits = load_corpus()
    train, valid, test = (splits[name].subset(np.arange(n)) for name, n in
                          (("train", 64), ("valid", 32), ("test", 64)))
    tok = CharTokenizer.build(train.texts)
    model = TransformerClassifier(tok.vocab_size, 2, d_model=16, n_heads=2, n_layers=2, d_ff=32,
                                  max_len=48, dropout=0.0, seed=0)
    config = TrainConfig(epochs=2, batch_size=32, max_len=48, warmup_steps=1)
    history = fit(model, train, valid, tok, config, progress=False, log=None)
    return model, tok, history.as_dict(), test


def _trained_model(checkpoint_path: Path):
    from . import checkpoint
    from .data import load_corpus
    from .tokenizer import CharTokenizer

    if not checkpoint_path.is_file():
        raise FileNotFoundError(
            f"checkpoint: no trained classifier at {str(checkpoint_path)!r}; train one with "
            f"`python -m numpy_transformer train --out DIR` and pass checkpoint=DIR/classifier.npz, "
            f"or use quick=True")
    ckpt = checkpoint.load(checkpoint_path)
    if ckpt.tokenizer is None:
        raise ValueError(f"checkpoint: {str(checkpoint_path)!r} carries no tokenizer, so it cannot read text")
    history = ckpt.extra.get("history")
    if not history:
        raise ValueError(f"checkpoint: {str(checkpoint_path)!r} has no training history in extra['history']")
    return ckpt.model, CharTokenizer.from_dict(ckpt.tokenizer), history, load_corpus()["test"]


def _seed_attention(out_dir: Path, model, tok) -> list[Path]:
    from . import viz
    from .data import SEED_SENTENCES

    model.eval()
    paths = []
    for n, (text, _) in enumerate(SEED_SENTENCES, start=1):
        ids, valid = tok.encode_batch([text], model.config["max_len"], add_cls=True)   # (1, T)
        model(ids, valid)
        weights = np.stack([np.asarray(w[0]) for w in model.attention_weights])          # (L, H, T, T)
        tokens = [tok.id_to_token(int(i)) for i in ids[0]]
        # Colour scales stretched to the data: averaged and 19-way weights are small numbers.
        fig = viz.attention_grid(weights, tokens, vmax="auto",
                                 title=f"Trained classifier, every layer and head: {text}")
        paths.append(_save(fig, out_dir / f"attention_seed_sentence{n}.png"))
        fig = viz.attention_map(weights.mean(axis=(0, 1)), tokens, annotate=False, vmax="auto",
                                title=f"averaged over layers and heads\n{text}")
        paths.append(_save(fig, out_dir / f"attention_seed_sentence{n}_mean.png"))
    return paths


def model_name(model, source: str) -> str:
    """A short description of which model a figure shows, e.g. "classifier_small.npz (D=64, 2 layers, [CLS])"."""
    c = model.config
    pooling = "[CLS]" if c.get("pooling") == "cls" else "mean pooling"
    return f"{source} (D={c['d_model']}, {c['n_layers']} layers, {c['n_heads']} heads, {pooling})"


def _evaluation(out_dir: Path, model, tok, history, test, source: str = "") -> list[Path]:
    from . import viz
    from .data import LABEL_NAMES
    from .metrics import roc_curve
    from .train import evaluate

    name = model_name(model, source or "model")
    fig = viz.training_curves(history)
    epochs = len(history.get("epoch", [])) or len(history.get("train_loss", []))
    why = history.get("stopped_because")
    fig.suptitle(f"Training history of {name}, {epochs} epoch{'s' if epochs != 1 else ''}"
                 + (f"\nstopped: {why}" if why else ""), fontsize=10)
    paths = [_save(fig, out_dir / "training_curves.png")]
    result = evaluate(model, test, tok, max_len=model.config["max_len"])
    fpr, tpr, _ = roc_curve(test.labels, result["probs"][:, 1])
    fig = viz.roc_plot(fpr, tpr, auc=result["auc"])
    fig.axes[0].set_title(f"{name}\ntest split, {len(test)} reviews", fontsize=10)
    paths.append(_save(fig, out_dir / "roc_test.png"))
    fig = viz.confusion_plot(np.array(result["confusion"]), LABEL_NAMES)
    fig.axes[0].set_title(f"{name}\ntest split, {len(test)} reviews; the positive class is {LABEL_NAMES[1]!r}",
                          fontsize=10)
    paths.append(_save(fig, out_dir / "confusion_test.png"))
    return paths


def _zero_and_few_shot(out_dir: Path, results_path: Path) -> list[Path]:
    import json

    from . import viz

    if not results_path.is_file():
        raise FileNotFoundError(f"{results_path}: the zero-/few-shot results are missing; make them with "
                                f"python -m numpy_transformer fewshot notebooks/assets/lm_small.npz --out {results_path}")
    results = json.loads(results_path.read_text(encoding="utf-8"))
    zero = results["zero_shot"]
    line = {"best zero-shot (label words, calibrated)": zero["best_calibrated"]["test_accuracy"]}
    return [_save(viz.few_shot_curves(results["few_shot"], line), out_dir / "fewshot_curves.png"),
            _save(viz.calibration_bars(zero["label_words"]), out_dir / "zeroshot_calibration.png")]


# --------------------------------------------------------------------------- #
# The one entry point
# --------------------------------------------------------------------------- #

def make_all(out_dir: Path, quick: bool = False, checkpoint: Path | None = None) -> list[Path]:
    """Write every figure of ``FIGURE_NAMES`` into ``out_dir``; return their paths, in that order.

    ``checkpoint``: the trained classifier to draw (default ``DEFAULT_CHECKPOINT``).
    ``quick``: use a tiny model trained for a few steps on a small slice of
    the corpus instead (seconds; for tests). Other files in ``out_dir`` are
    left alone.
    """
    from . import viz

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    viz.use_cjk_font()
    if quick:
        model, tok, history, test = _quick_model()
        source = "a tiny quick model"
    else:
        path = Path(checkpoint or DEFAULT_CHECKPOINT)
        model, tok, history, test = _trained_model(path)
        source = path.name
    paths = (_positional_encoding(out_dir) + _masks(out_dir) + _toy_attention(out_dir)
             + _seed_attention(out_dir, model, tok) + _evaluation(out_dir, model, tok, history, test, source)
             + _zero_and_few_shot(out_dir, DEFAULT_ZEROSHOT_RESULTS))
    by_name = {p.name: p for p in paths}
    return [by_name[name] for name in FIGURE_NAMES]
