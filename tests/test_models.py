"""Tests for numpy_transformer.models: whole-model gradients, padding, causality, learning, saving."""

import json

import numpy as np
import pytest

from numpy_transformer import functional as F
from numpy_transformer.gradcheck import check_gradients
from numpy_transformer.models import TransformerClassifier, TransformerLM
from numpy_transformer.nn import PositionalEncoding

NORMS = ["post", "pre", "parallel"]
POOLINGS = ["cls", "mean"]
TINY = dict(d_model=8, n_heads=2, n_layers=2, d_ff=16, max_len=8)
PAD, CLS = 0, 2

# The tiny batch for gradient checks: row 1 has two padding tokens.
IDS = np.array([[CLS, 3, 4, 5, 6], [CLS, 7, 8, PAD, PAD]])
MASK = IDS != PAD


def tiny_classifier(norm="pre", pooling="cls", **kw):
    kw = {**TINY, "dropout": 0.0, "norm": norm, "pooling": pooling, "activation": "gelu", "dtype": np.float64,
          **kw}
    return TransformerClassifier(11, 3, **kw)


def tiny_lm(tie_weights=True, **kw):
    kw = {**TINY, "dropout": 0.0, "tie_weights": tie_weights, "dtype": np.float64, **kw}
    return TransformerLM(11, **kw)


def model_gradcheck(model, ids, mask):
    """Check every parameter's gradient (the embedding table included) of a whole model; return the results."""
    params = dict(model.named_parameters())
    inputs = {name: p.data for name, p in params.items()}

    def forward(**_):
        return model(ids, mask)

    def backward(dout, **_):
        model.zero_grad()
        model(ids, mask)
        model.backward(dout)
        return {name: p.grad.copy() for name, p in params.items()}

    results = check_gradients(forward, backward, inputs)
    assert "embed.E" in results and set(results) == set(params)
    return results


# --------------------------------------------------------------------------- #
# Whole-model gradient checks (float64, tiny configs)
# --------------------------------------------------------------------------- #

@pytest.mark.parametrize("pooling", POOLINGS)
@pytest.mark.parametrize("norm", NORMS)
def test_classifier_gradients(norm, pooling):
    results = model_gradcheck(tiny_classifier(norm, pooling), IDS, MASK)
    worst = max(r.max_rel_error for r in results.values())
    print(f"classifier norm={norm} pooling={pooling}: worst relative error {worst:.2e}")


def test_classifier_gradients_relu_learned_pe_unscaled():
    model = tiny_classifier("post", "mean", activation="relu", pos_encoding="learned", scale_embeddings=False,
                            seed=17)
    # ReLU has a kink at 0 where the finite difference means nothing. The other checks use GELU; this
    # one uses a seed whose hidden units all sit well away from 0, and says so if that ever changes.
    model(IDS, MASK)
    for block in model.encoder.blocks:
        x, W1, _ = block.ffn._cache[0]
        hidden = x @ W1 + block.ffn.b1.data
        assert np.abs(hidden).min() > 1e-2, "a ReLU input is within the finite-difference step of its kink"
    model_gradcheck(model, IDS, MASK)


@pytest.mark.parametrize("tie_weights", [True, False])
def test_lm_gradients(tie_weights):
    model = tiny_lm(tie_weights)
    assert ("head.W" in dict(model.named_parameters())) != tie_weights
    results = model_gradcheck(model, IDS, MASK)
    worst = max(r.max_rel_error for r in results.values())
    print(f"LM tie_weights={tie_weights}: worst relative error {worst:.2e}")


def test_tied_embedding_gets_both_gradients():
    """With tied weights E.grad = (output-layer part) + (input-lookup part); neither may overwrite the other."""
    model = tiny_lm(True)
    dout = np.random.default_rng(0).standard_normal((2, 5, 11))
    model(IDS, MASK)
    model.backward(dout)
    total = model.embed.E.grad.copy()
    h = model.encoder(model._embed_forward(IDS), F.causal_mask(5) & F.padding_mask(MASK))
    output_part = dout.reshape(-1, 11).T @ h.reshape(-1, 8)            # dE from logits = h E^T
    assert np.abs(total - output_part).max() > 1e-3, "the input lookup's share is missing"
    assert np.abs(output_part).max() > 1e-3


# --------------------------------------------------------------------------- #
# Padding and causality
# --------------------------------------------------------------------------- #

@pytest.mark.parametrize("pooling", POOLINGS)
@pytest.mark.parametrize("norm", NORMS)
def test_padding_does_not_change_classifier_logits(norm, pooling):
    model = TransformerClassifier(11, 3, **{**TINY, "max_len": 12}, dropout=0.1, norm=norm, pooling=pooling,
                                  dtype=np.float64).eval()
    seq = np.array([[CLS, 5, 9, 4, 3]])
    alone = model(seq, np.ones_like(seq, dtype=bool))
    for n_pad in (1, 4):
        padded = np.concatenate([seq, np.full((1, n_pad), PAD)], axis=1)
        np.testing.assert_allclose(model(padded, padded != PAD), alone, rtol=0, atol=1e-6)
    # in a batch next to a longer sequence, and with rubbish (not PAD) ids in the masked slots
    batch = np.array([[CLS, 5, 9, 4, 3, 7, 7, 1], [CLS, 5, 9, 4, 3, 10, 1, 6]])
    mask = np.ones_like(batch, dtype=bool)
    mask[1, 5:] = False
    np.testing.assert_allclose(model(batch, mask)[1:], alone, rtol=0, atol=1e-6)


def test_cls_pooling_needs_a_real_token_first():
    model = tiny_classifier(pooling="cls")
    mask = MASK.copy()
    mask[1, 0] = False
    with pytest.raises(ValueError, match=r"mask\[1, 0\]"):
        model(IDS, mask)


@pytest.mark.parametrize("norm", NORMS)
def test_lm_is_causal(norm):
    model = TransformerLM(11, **TINY, dropout=0.0, norm=norm, dtype=np.float64)
    ids = np.array([[3, 4, 5, 6, 7, 8, 9]])
    base = model(ids)
    for t in range(ids.shape[1] - 1):
        changed = ids.copy()
        changed[0, t + 1:] = (changed[0, t + 1:] + 3) % 11
        out = model(changed)
        np.testing.assert_allclose(out[:, :t + 1], base[:, :t + 1], rtol=0, atol=1e-10)
        assert not np.allclose(out[:, t + 1:], base[:, t + 1:]), "later positions must see the change"


def test_lm_right_padding_leaves_real_positions_alone():
    model = tiny_lm()
    ids = np.array([[3, 4, 5]])
    padded = np.array([[3, 4, 5, PAD, PAD]])
    np.testing.assert_allclose(model(padded, padded != PAD)[:, :3], model(ids), rtol=0, atol=1e-10)


# --------------------------------------------------------------------------- #
# Learning
# --------------------------------------------------------------------------- #

S1 = "这是一个有趣的文章，我很喜欢阅读它。"   # positive
S2 = "这篇文章太无聊了，我一点也不想读。"     # negative


def two_sentence_batch():
    """Character ids with [PAD]=0 and [CLS]=2 at position 0, as the tokenizer does; labels (1, 0)."""
    chars = sorted(set(S1 + S2))
    vocab = {c: i + 5 for i, c in enumerate(chars)}               # ids 0-4 are the special tokens
    rows = [[CLS] + [vocab[c] for c in s] for s in (S1, S2)]
    T = max(map(len, rows))
    ids = np.array([r + [PAD] * (T - len(r)) for r in rows])
    return ids, ids != PAD, np.array([1, 0]), len(vocab) + 5


def adam(params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8):
    """A plain Adam (Kingma & Ba 2015), kept here so these tests do not depend on optim.py."""
    m = [np.zeros_like(p.data) for p in params]
    v = [np.zeros_like(p.data) for p in params]
    t = 0

    def step():
        nonlocal t
        t += 1
        for p, m_i, v_i in zip(params, m, v):
            m_i[...] = betas[0] * m_i + (1 - betas[0]) * p.grad
            v_i[...] = betas[1] * v_i + (1 - betas[1]) * p.grad ** 2
            m_hat = m_i / (1 - betas[0] ** t)
            v_hat = v_i / (1 - betas[1] ** t)
            p.data -= lr * m_hat / (np.sqrt(v_hat) + eps)
    return step


def train(model, ids, mask, targets, steps, lr=1e-3, stop_below=None):
    step = adam(model.parameters(), lr=lr)
    losses = []
    for _ in range(steps):
        model.zero_grad()
        loss, cache = F.cross_entropy(model(ids, mask), targets)
        model.backward(F.cross_entropy_backward(1.0, cache))
        step()
        losses.append(float(loss))
        if stop_below is not None and losses[-1] < stop_below:
            break
    return losses


def test_classifier_fits_the_two_seed_sentences():
    ids, mask, labels, V = two_sentence_batch()
    model = TransformerClassifier(V, 2)                          # the default configuration, dropout 0.1
    losses = train(model, ids, mask, labels, steps=200, stop_below=0.01)
    print(f"two sentences: loss {losses[0]:.3f} -> {losses[-1]:.4f} in {len(losses)} steps")
    assert losses[-1] < 0.01
    assert np.array_equal(model.predict_proba(ids, mask).argmax(axis=1), labels)


def test_training_is_bit_reproducible():
    ids, mask, labels, V = two_sentence_batch()
    runs = [train(TransformerClassifier(V, 2, d_model=32, d_ff=64, dropout=0.2, seed=3), ids, mask, labels, 15)
            for _ in range(2)]
    assert runs[0] == runs[1]                                    # exact float equality, dropout included
    other = train(TransformerClassifier(V, 2, d_model=32, d_ff=64, dropout=0.2, seed=4), ids, mask, labels, 15)
    assert other != runs[0]


def test_lm_memorises_a_string():
    text = S1
    chars = sorted(set(text))
    ids = np.array([[chars.index(c) for c in text]])             # (1, T)
    model = TransformerLM(len(chars), d_model=32, n_heads=4, n_layers=2, d_ff=64, max_len=32, dropout=0.0)
    inputs, targets = ids[:, :-1], ids[:, 1:]                     # predict token t+1 from tokens <= t
    losses = train(model, inputs, None, targets, steps=300, lr=3e-3, stop_below=0.02)
    print(f"LM memorising {len(text)} characters: loss {losses[0]:.3f} -> {losses[-1]:.4f} in {len(losses)} steps")
    assert losses[-1] < 0.02, f"loss {losses[-1]:.3f} after {len(losses)} steps"
    out = model.generate(ids[:, :1], len(text) - 1, rng=None, greedy=True)
    assert "".join(chars[i] for i in out[0]) == text


# --------------------------------------------------------------------------- #
# Generation
# --------------------------------------------------------------------------- #

def test_generate_shapes_modes_and_seeds():
    model = TransformerLM(11, **TINY)
    assert model.training
    prompt = np.array([[3, 4], [5, 6]])
    out = model.generate(prompt, 10, np.random.default_rng(0))   # 12 > max_len: the context is cropped
    assert out.shape == (2, 12) and np.array_equal(out[:, :2], prompt)
    assert out.min() >= 0 and out.max() < 11
    assert model.training, "generate restores the training mode"
    again = model.generate(prompt, 10, np.random.default_rng(0))
    np.testing.assert_array_equal(out, again)
    greedy = model.generate(prompt, 4, None, greedy=True)
    np.testing.assert_array_equal(model.generate(prompt, 4, np.random.default_rng(1), top_k=1), greedy)
    with pytest.raises(ValueError, match="temperature"):
        model.generate(prompt, 1, np.random.default_rng(0), temperature=0)
    with pytest.raises(ValueError, match="top_k"):
        model.generate(prompt, 1, np.random.default_rng(0), top_k=0)


def test_top_k_samples_only_the_top_tokens():
    model = TransformerLM(11, **TINY, dropout=0.0)
    prompt = np.array([[3, 4]] * 200)
    probs, _ = F.softmax(model(prompt[:1])[0, -1].astype(np.float64))
    top2 = set(np.argsort(probs)[-2:])
    out = model.generate(prompt, 1, np.random.default_rng(0), top_k=2)
    assert set(out[:, -1]) == top2


# --------------------------------------------------------------------------- #
# Inputs, dtypes, modes, configs and state dicts
# --------------------------------------------------------------------------- #

def test_input_validation_messages():
    model = tiny_classifier()
    with pytest.raises(TypeError, match="ids: expected an integer array"):
        model(IDS.astype(np.float32), MASK)
    with pytest.raises(ValueError, match=r"ids: expected a 2-D array"):
        model(IDS[0], MASK[0])
    with pytest.raises(ValueError, match=r"\[0, 11\).*got 11 at position \(1, 2\)"):
        bad = IDS.copy()
        bad[1, 2] = 11
        model(bad, MASK)
    with pytest.raises(ValueError, match=r"got -2 at position \(0, 0\)"):
        model(-IDS, None)
    with pytest.raises(ValueError, match="max_len=8"):
        model(np.full((1, 9), 3), None)
    with pytest.raises(ValueError, match=r"mask: expected the shape of ids \(2, 5\)"):
        model(IDS, MASK[:, :4])
    with pytest.raises(TypeError, match="mask: expected a boolean"):
        model(IDS, MASK.astype(np.int64))
    empty = MASK.copy()
    empty[1] = False
    with pytest.raises(ValueError, match="row 1 all False"):
        tiny_classifier(pooling="mean")(IDS, empty)
    with pytest.raises(ValueError, match="pooling"):
        TransformerClassifier(11, 2, pooling="max")


def test_float32_model_gives_float32_everywhere():
    model = TransformerClassifier(11, 3, **TINY)
    logits = model(IDS, MASK)
    assert logits.dtype == np.float32
    demb = model.backward(np.ones_like(logits))
    assert demb.shape == (2, 5, 8) and demb.dtype == np.float32      # the gradient at the embedding output
    assert all(p.grad.dtype == np.float32 for p in model.parameters())
    lm = TransformerLM(11, **TINY)
    assert lm(IDS).dtype == np.float32


def test_to_float64_converts_parameters_and_tables():
    model = TransformerClassifier(11, 3, **TINY)
    expected = model.eval()(IDS, MASK).astype(np.float64)
    model.to(dtype=np.float64)
    assert all(p.data.dtype == np.float64 and p.grad.dtype == np.float64 for p in model.parameters())
    tables = [m.table for m in model.modules() if isinstance(m, PositionalEncoding)]
    assert tables and all(t.dtype == np.float64 for t in tables)
    out = model(IDS, MASK)
    assert out.dtype == np.float64
    np.testing.assert_allclose(out, expected, atol=1e-4)


def test_train_eval_toggles_dropout():
    model = TransformerClassifier(11, 3, **TINY, dropout=0.3)
    a, b = model(IDS, MASK), model(IDS, MASK)
    assert not np.array_equal(a, b), "training mode: fresh dropout masks"
    model.eval()
    np.testing.assert_array_equal(model(IDS, MASK), model(IDS, MASK))
    probs = model.train().predict_proba(IDS, MASK)
    assert model.training, "predict_proba restores the training mode"
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-6)
    np.testing.assert_allclose(probs, model.predict_proba(IDS, MASK))


@pytest.mark.parametrize("cls, kwargs", [
    (TransformerClassifier, dict(vocab_size=11, num_classes=3, pooling="mean", norm="parallel",
                                 pos_encoding="learned", seed=5)),
    (TransformerLM, dict(vocab_size=11, tie_weights=False, norm="post", pos_encoding="seed", seed=5)),
])
def test_config_round_trip(cls, kwargs):
    model = cls(**{**TINY, **kwargs})
    config = json.loads(json.dumps(model.config))                # JSON-able
    assert config["dtype"] == "float32"
    rebuilt = cls.from_config(config)
    assert type(rebuilt) is cls and rebuilt.config == model.config
    for (n, p), (_, q) in zip(model.named_parameters(), rebuilt.named_parameters()):
        np.testing.assert_array_equal(p.data, q.data, err_msg=n)    # the seed gives the same initial weights
    model.eval(), rebuilt.eval()
    np.testing.assert_array_equal(model(IDS), rebuilt(IDS))
    with pytest.raises(ValueError, match=r"unknown keys \['n_experts'\]"):
        cls.from_config({**config, "n_experts": 4})


def test_state_dict_round_trip():
    a = TransformerClassifier(11, 3, **TINY, seed=1).eval()
    b = TransformerClassifier(11, 3, **TINY, seed=2).eval()
    assert not np.array_equal(a(IDS, MASK), b(IDS, MASK))
    b.load_state_dict(a.state_dict())
    np.testing.assert_array_equal(a(IDS, MASK), b(IDS, MASK))


def test_state_dict_errors_name_the_key():
    model = TransformerClassifier(11, 3, **TINY)
    state = model.state_dict()
    missing = dict(state)
    del missing["encoder.blocks.1.ffn.b1"]
    with pytest.raises(ValueError, match=r"missing keys: \['encoder\.blocks\.1\.ffn\.b1'\]"):
        model.load_state_dict(missing)
    extra = {**state, "encoder.blocks.2.ffn.b1": np.zeros(16, dtype=np.float32)}
    with pytest.raises(ValueError, match=r"unexpected keys: \['encoder\.blocks\.2\.ffn\.b1'\]"):
        model.load_state_dict(extra)
    wrong = {**state, "head.W": np.zeros((8, 4), dtype=np.float32)}
    with pytest.raises(ValueError, match=r"head\.W: expected shape \(8, 3\), got \(8, 4\)"):
        model.load_state_dict(wrong)


def test_tied_lm_has_one_table():
    tied, untied = TransformerLM(11, **TINY), TransformerLM(11, **TINY, tie_weights=False)
    assert untied.num_parameters() - tied.num_parameters() == 8 * 11
    assert "head.W" not in tied.state_dict()


def test_attention_weights_property():
    model = TransformerClassifier(11, 3, **TINY)
    model(IDS, MASK)
    weights = model.attention_weights
    assert len(weights) == 2 and all(w.shape == (2, 2, 5, 5) for w in weights)
    assert np.all(weights[0][1, :, :, 3:] == 0), "no query attends to padding"


@pytest.mark.parametrize("norm", NORMS)
def test_parameter_count_matches_the_formula(norm):
    V, C, D, H, Fw, L = 4000, 2, 128, 4, 512, 2
    model = TransformerClassifier(V, C, norm=norm)
    ln = 2 * D
    block = (D * 3 * D + 3 * D) + (D * D + D) + (D * Fw + Fw + Fw * D + D) + (ln if norm == "parallel" else 2 * ln)
    final = 0 if norm == "post" else ln
    assert model.num_parameters() == V * D + L * block + final + D * C + C
    if norm == "pre":
        assert model.num_parameters() == 909_058                  # the default classifier


# --------------------------------------------------------------------------- #
# Device arrays: the strict CPU stand-in for CuPy (tests/strict_backend.py)
# --------------------------------------------------------------------------- #

@pytest.fixture
def to_strict_device(strict, monkeypatch):
    """Make ``Module.to("gpu")`` move arrays to the stand-in instead of CuPy, and return it."""
    from numpy_transformer import nn
    from numpy_transformer.backend import to_numpy

    monkeypatch.setattr(nn, "to_device", lambda a, device: strict.asarray(a) if device == "gpu" else to_numpy(a))
    return strict


@pytest.mark.parametrize("make", [
    lambda: TransformerClassifier(11, 3, **TINY, pooling="mean", dropout=0.2),
    lambda: TransformerClassifier(11, 3, **TINY, pooling="cls", norm="post", pos_encoding="learned"),
    lambda: TransformerLM(11, **TINY, dropout=0.2),
    lambda: TransformerLM(11, **TINY, tie_weights=False, norm="parallel"),
], ids=["classifier-mean", "classifier-cls", "lm-tied", "lm-untied"])
def test_models_never_mix_host_and_device_arrays(to_strict_device, make):
    """Host ids and mask in, device arrays everywhere inside, the same numbers as on the CPU."""
    strict = to_strict_device
    host, device = make(), make().to(device="gpu")
    out_host, out_dev = host(IDS, MASK), device(IDS, MASK)
    assert type(out_dev).__name__ == "StrictArray"
    np.testing.assert_allclose(out_dev.get(), out_host, rtol=1e-6, atol=1e-6)
    dout = np.random.default_rng(0).standard_normal(out_host.shape).astype(np.float32)
    host.backward(dout)
    device.backward(strict.asarray(dout))
    for (name, p), (_, q) in zip(host.named_parameters(), device.named_parameters()):
        assert type(q.grad).__name__ == "StrictArray", name
        np.testing.assert_allclose(q.grad.get(), p.grad, rtol=1e-5, atol=1e-6, err_msg=name)
    if isinstance(host, TransformerLM):
        prompt = IDS[:, :2]
        np.testing.assert_array_equal(device.generate(prompt, 3, np.random.default_rng(0)),
                                      host.generate(prompt, 3, np.random.default_rng(0)))
    else:
        np.testing.assert_allclose(device.predict_proba(IDS, MASK), host.predict_proba(IDS, MASK), atol=1e-6)
    device.to(device="cpu")
    assert all(type(p.data) is np.ndarray for p in device.parameters())
    np.testing.assert_allclose(device.eval()(IDS, MASK), host.eval()(IDS, MASK), rtol=1e-6, atol=1e-6)
