"""The training loop learns, stops when told, and reports honest metrics."""

import numpy as np
import pytest

from numpy_transformer import data
from numpy_transformer.models import TransformerClassifier
from numpy_transformer.tokenizer import CharTokenizer
from numpy_transformer.train import TrainConfig, evaluate, fit, predict_texts


@pytest.fixture(scope="module")
def corpus_slice():
    """1,600 training and 400 validation reviews of the real corpus: enough to learn in seconds."""
    splits = data.load_corpus()
    rng = np.random.default_rng(0)
    train = splits["train"].subset(rng.choice(len(splits["train"]), 1600, replace=False))
    valid = splits["valid"].subset(np.arange(400))
    return train, valid, CharTokenizer.build(train.texts, min_freq=2)


def small_model(tok, **kw):
    args = dict(vocab_size=tok.vocab_size, num_classes=2, d_model=32, n_heads=2, n_layers=1, d_ff=64,
                max_len=64, dropout=0.1, seed=0)
    args.update(kw)
    return TransformerClassifier(**args)


def test_fit_beats_chance_on_a_corpus_slice(corpus_slice):
    train, valid, tok = corpus_slice
    model = small_model(tok)
    before = evaluate(model, valid, tok, max_len=64)
    history = fit(model, train, valid, tok, TrainConfig(epochs=6, lr=3e-3, max_len=64, warmup_steps=20),
                  progress=False, log=None)
    after = evaluate(model, valid, tok, max_len=64)
    assert after["loss"] < before["loss"] - 0.05
    assert after["accuracy"] > 0.62, history.valid_acc  # chance ~0.52; 0.62 is 4 standard errors above it
    assert after["auc"] > 0.68, after["auc"]
    assert history.valid_loss[history.best_epoch - 1] == min(history.valid_loss)


def test_fit_restores_the_best_epoch_and_records_history(corpus_slice):
    train, valid, tok = corpus_slice
    model = small_model(tok)
    history = fit(model, train.subset(np.arange(200)), valid.subset(np.arange(100)), tok,
                  TrainConfig(epochs=3, max_len=64, warmup_steps=2, patience=10), progress=False, log=None)
    assert len(history.epoch) == len(history.valid_loss) == len(history.train_loss) == 3
    best = evaluate(model, valid.subset(np.arange(100)), tok, max_len=64)["loss"]
    assert best == pytest.approx(min(history.valid_loss), rel=1e-6)
    assert not model.training


def test_time_budget_stops_training(corpus_slice):
    train, valid, tok = corpus_slice
    history = fit(small_model(tok), train, valid.subset(np.arange(50)), tok,
                  TrainConfig(epochs=50, max_len=64, time_budget=1.0), progress=False, log=None)
    assert "time budget" in history.stopped_because
    assert len(history.epoch) < 50
    # the budget is checked after every step, so training ends within one step and one validation of it
    assert history.seconds[-1] < 1.0 + 5.0


def test_same_seed_same_losses(corpus_slice):
    train, valid, tok = corpus_slice
    runs = []
    for _ in range(2):
        history = fit(small_model(tok), train.subset(np.arange(96)), valid.subset(np.arange(32)), tok,
                      TrainConfig(epochs=2, max_len=64, warmup_steps=2), progress=False, log=None)
        runs.append(history.train_loss + history.valid_loss)
    assert runs[0] == runs[1]


def test_evaluate_returns_probabilities_in_dataset_order(corpus_slice):
    _, valid, tok = corpus_slice
    model = small_model(tok)
    subset = valid.subset(np.arange(40))
    result = evaluate(model, subset, tok, max_len=64, batch_size=7)
    probs, _ = predict_texts(model, tok, subset.texts, max_len=64)
    np.testing.assert_allclose(result["probs"], probs, rtol=1e-5, atol=1e-6)
    assert result["probs"].shape == (40, 2)
    np.testing.assert_allclose(result["probs"].sum(axis=1), 1.0)


def test_bad_config_is_refused():
    with pytest.raises(ValueError, match="batch_size"):
        TrainConfig(batch_size=0)
    with pytest.raises(ValueError, match="time_budget"):
        TrainConfig(time_budget=-1)
