"""Generation: the key/value cache gives the uncached numbers, and the samplers do what they say."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from numpy_transformer import functional as F
from numpy_transformer.generation import (Decoder, apply_repetition_penalty, beam_search, generate, sample,
                                          top_k_filter, top_p_filter)
from numpy_transformer.models import TransformerLM

V = 17


def _model(norm="pre", max_len=12, tie=True, seed=0, fused=True):
    m = TransformerLM(V, d_model=12, n_heads=3, n_layers=2, d_ff=20, max_len=max_len, dropout=0.1, norm=norm,
                      tie_weights=tie, seed=seed, dtype=np.float64)
    if not fused:
        pass
    return m.eval()


@pytest.mark.parametrize("norm", ["pre", "post", "parallel"])
@pytest.mark.parametrize("tie", [True, False])
def test_cached_and_uncached_decoding_give_the_same_logits(norm, tie):
    model = _model(norm, tie=tie)
    rng = np.random.default_rng(1)
    prompt = rng.integers(0, V, (2, 3))
    cached, plain = Decoder(model, use_cache=True), Decoder(model, use_cache=False)
    a, b = cached.begin(prompt), plain.begin(prompt)
    np.testing.assert_allclose(a, b, rtol=0, atol=1e-10)
    for _ in range(30):                                       # crosses max_len = 12: the window restarts
        nxt = rng.integers(0, V, 2)
        a, b = cached.append(nxt), plain.append(nxt)
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-10)
    assert cached.restarts == plain.restarts >= 3


def test_cached_logits_equal_the_full_forward_inside_the_window():
    model = _model()
    ids = np.random.default_rng(2).integers(0, V, (1, 12))
    full = model(ids)                                         # (1, 12, V)
    dec = Decoder(model, use_cache=True)
    got = [dec.begin(ids[:, :1])[0]] + [dec.append(ids[:, t])[0] for t in range(1, 12)]
    np.testing.assert_allclose(np.stack(got), full[0], rtol=0, atol=1e-10)


@pytest.mark.parametrize("strategy,kw", [("greedy", {}), ("sample", dict(temperature=0.9)),
                                         ("top-k", dict(top_k=5)), ("top-p", dict(top_p=0.8)),
                                         ("greedy", dict(repetition_penalty=1.3)),
                                         ("beam", dict(num_beams=3))])
def test_same_text_with_and_without_the_cache(strategy, kw):
    model = _model()
    prompt = [3, 4, 5]
    texts = [generate(model, prompt, 25, strategy=strategy, rng=np.random.default_rng(7), use_cache=c,
                      eos_id=-1, **kw) for c in (True, False)]
    assert texts[0] == texts[1]
    assert len(texts[0]) == 25
    again = generate(model, prompt, 25, strategy=strategy, rng=np.random.default_rng(7), eos_id=-1, **kw)
    assert again == texts[0]                                  # the seed reproduces the text


def test_a_prompt_longer_than_max_len_keeps_its_end_in_both_decoders():
    model = _model(max_len=8)
    prompt = list(np.random.default_rng(3).integers(0, V, 20))
    a = generate(model, prompt, 10, rng=np.random.default_rng(0), strategy="sample", use_cache=True, eos_id=-1)
    b = generate(model, prompt, 10, rng=np.random.default_rng(0), strategy="sample", use_cache=False, eos_id=-1)
    assert a == b
    # only the last max_len tokens of the prompt matter
    c = generate(model, [0] * 5 + prompt[-8:], 10, rng=np.random.default_rng(0), strategy="sample", eos_id=-1)
    assert c == a


def test_generation_stops_at_eos_and_never_returns_banned_tokens():
    model = _model()
    greedy_first = int(np.argmax(Decoder(model).begin(np.array([[1, 2]]))[0]))
    assert generate(model, [1, 2], 10, eos_id=greedy_first) == []
    out = generate(model, [1, 2], 30, strategy="sample", rng=np.random.default_rng(0), eos_id=-1,
                   banned_ids=range(0, 10))
    assert len(out) == 30 and min(out) >= 10


def test_top_p_keeps_the_token_that_crosses_p_and_renormalises():
    probs = np.array([0.1, 0.5, 0.15, 0.25])
    np.testing.assert_allclose(top_p_filter(probs, 0.5), [0, 1, 0, 0])          # exactly p: 0.5 alone
    np.testing.assert_allclose(top_p_filter(probs, 0.6), [0, 0.5 / 0.75, 0, 0.25 / 0.75])
    np.testing.assert_allclose(top_p_filter(probs, 0.75), [0, 0.5 / 0.75, 0, 0.25 / 0.75])
    np.testing.assert_allclose(top_p_filter(probs, 0.76), [0, 0.5 / 0.9, 0.15 / 0.9, 0.25 / 0.9])
    np.testing.assert_allclose(top_p_filter(probs, 1.0), probs)
    np.testing.assert_allclose(top_p_filter(probs, 1e-9), [0, 1, 0, 0])         # at least one token
    with pytest.raises(ValueError, match="top_p"):
        top_p_filter(probs, 0.0)
    with pytest.raises(ValueError, match="top_p"):
        top_p_filter(probs, 1.5)


@settings(max_examples=40, deadline=None)
@given(V=st.integers(1, 12), p=st.floats(0.01, 1.0), seed=st.integers(0, 2**31))
def test_top_p_against_a_sorted_loop(V, p, seed):
    probs = np.random.default_rng(seed).dirichlet(np.ones(V))
    expected = np.zeros(V)
    total = 0.0
    for i in np.argsort(-probs, kind="stable"):
        expected[i] = probs[i]
        total += probs[i]
        if total >= p:
            break
    expected /= expected.sum()
    np.testing.assert_allclose(top_p_filter(probs, p), expected, atol=1e-12)


def test_top_k_temperature_penalty_and_sample():
    z = np.array([1.0, 3.0, 2.0, -1.0])
    np.testing.assert_array_equal(top_k_filter(z, 2), [-np.inf, 3.0, 2.0, -np.inf])
    with pytest.raises(ValueError, match="top_k"):
        top_k_filter(z, 0)
    with pytest.raises(ValueError, match="top_k"):
        top_k_filter(z, 5)
    np.testing.assert_allclose(apply_repetition_penalty(z, [1, 3], 2.0), [1.0, 1.5, 2.0, -2.0])
    rng = np.random.default_rng(0)
    draws = np.bincount([sample(np.array([0.2, 0.0, 0.8]), rng) for _ in range(4000)], minlength=3)
    assert draws[1] == 0 and abs(draws[2] / 4000 - 0.8) < 0.03


def test_beam_search_with_one_beam_is_greedy():
    model = _model()
    assert beam_search(model, [2, 3], 15, num_beams=1, eos_id=-1) == generate(model, [2, 3], 15, eos_id=-1)


def test_beam_search_finds_a_likelier_text_than_greedy():
    model = _model(seed=4)

    def logprob(prompt, cont):
        ids = np.array([prompt + cont])
        logp, _ = F.log_softmax(model(ids[:, :-1])[0])
        return sum(logp[len(prompt) - 1 + t, c] for t, c in enumerate(cont))

    greedy = generate(model, [1], 8, eos_id=-1)
    beam = beam_search(model, [1], 8, num_beams=6, length_penalty=0.0, eos_id=-1)
    assert logprob([1], beam) >= logprob([1], greedy) - 1e-12


def test_generation_errors_name_the_argument():
    model = _model()
    with pytest.raises(ValueError, match="strategy"):
        generate(model, [1], 3, strategy="nucleus")
    with pytest.raises(ValueError, match="prompt_ids"):
        generate(model, [], 3)
    with pytest.raises(TypeError, match="rng"):
        generate(model, [1], 3, strategy="sample")
    with pytest.raises(ValueError, match="temperature"):
        generate(model, [1], 3, strategy="sample", temperature=0, rng=np.random.default_rng(0))
    with pytest.raises(ValueError, match="top_k"):
        generate(model, [1], 3, strategy="top-k", top_k=V + 1, rng=np.random.default_rng(0))
    with pytest.raises(ValueError, match="top_p"):
        generate(model, [1], 3, strategy="top-p", top_p=1.2, rng=np.random.default_rng(0))
    model.train()
    with pytest.raises(RuntimeError, match="eval"):
        model.forward_cached(np.array([[1]]))


@pytest.mark.parametrize("options", [dict(pos_encoding="rope"), dict(pos_encoding="alibi"),
                                     dict(attention="local", window=3)])
def test_models_without_a_cached_path_refuse_it_and_decode_without_it(options):
    """RoPE, ALiBi and local attention act inside attention, which the cached path does not model: it must
    refuse rather than return wrong logits, and the decoder must fall back to recomputing."""
    model = TransformerLM(V, d_model=12, n_heads=3, n_layers=2, d_ff=20, max_len=12, dropout=0.0,
                          seed=0, dtype=np.float64, **options).eval()
    assert not model.supports_kv_cache
    with pytest.raises(ValueError, match="use_cache=False"):
        model.forward_cached(np.array([[1, 2, 3]]))
    ids = np.random.default_rng(3).integers(0, V, (1, 8))
    dec = Decoder(model, use_cache=True)
    got = [dec.begin(ids[:, :1])[0]] + [dec.append(ids[:, t])[0] for t in range(1, 8)]
    np.testing.assert_allclose(np.stack(got), model(ids)[0], rtol=0, atol=1e-10)
    assert _model().supports_kv_cache
