"""Masked language modelling: the masking proportions, what is never chosen, and the MLM model's gradients."""

import numpy as np
import pytest

from numpy_transformer import functional as F
from numpy_transformer.gradcheck import check_gradients
from numpy_transformer.mlm import IGNORE_INDEX, TransformerMLM, mask_tokens

PAD, CLS, MASK_ID, FIRST_CHAR, V = 0, 2, 5, 6, 40


def _batch(rng, B=64, T=50):
    ids = rng.integers(FIRST_CHAR, V, size=(B, T))
    lengths = rng.integers(1, T + 1, size=B)
    valid = np.arange(T)[None, :] < lengths[:, None]
    ids[~valid] = PAD
    ids[:, 0] = CLS
    return ids, valid


def test_masking_proportions_15_80_10_10():
    rng = np.random.default_rng(0)
    ids, valid = _batch(rng, B=400, T=100)
    inputs, targets, chosen = mask_tokens(ids, valid, rng, MASK_ID, (FIRST_CHAR, V), protected_ids=(CLS,))
    candidates = valid & (ids != CLS)
    n_cand, n = int(candidates.sum()), int(chosen.sum())
    # 15 % of ~20,000 real tokens: the binomial standard deviation is ~0.25 points; allow 5 of them.
    assert abs(n / n_cand - 0.15) < 5 * np.sqrt(0.15 * 0.85 / n_cand)
    masked = chosen & (inputs == MASK_ID)
    kept = chosen & (inputs == ids)
    changed = chosen & (inputs != ids) & (inputs != MASK_ID)
    assert masked.sum() + kept.sum() + changed.sum() == n
    sd = np.sqrt(0.1 * 0.9 / n)
    assert abs(masked.sum() / n - 0.8) < 5 * np.sqrt(0.8 * 0.2 / n)
    # "kept" also catches the random draws that happen to give the same character back (1 in 34 here)
    p_same = 0.1 / (V - FIRST_CHAR)
    assert abs(kept.sum() / n - (0.1 + p_same)) < 5 * sd
    assert abs(changed.sum() / n - (0.1 - p_same)) < 5 * sd
    assert ((inputs[changed] >= FIRST_CHAR) & (inputs[changed] < V)).all()   # a character, never a special


def test_padding_and_protected_ids_are_never_chosen_and_targets_sit_only_at_chosen_positions():
    rng = np.random.default_rng(1)
    ids, valid = _batch(rng)
    inputs, targets, chosen = mask_tokens(ids, valid, rng, MASK_ID, (FIRST_CHAR, V), mask_prob=0.9,
                                          protected_ids=(CLS,))
    assert not chosen[~valid].any() and not chosen[:, 0].any()
    assert (inputs[~chosen] == ids[~chosen]).all()                  # nothing else is touched
    assert (targets[chosen] == ids[chosen]).all() and (targets[~chosen] == IGNORE_INDEX).all()
    assert (inputs[~valid] == PAD).all()


def test_masking_is_a_function_of_the_generator():
    ids, valid = _batch(np.random.default_rng(2))
    a = mask_tokens(ids, valid, np.random.default_rng(7), MASK_ID, (FIRST_CHAR, V))
    b = mask_tokens(ids, valid, np.random.default_rng(7), MASK_ID, (FIRST_CHAR, V))
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)


def test_masking_bad_arguments_name_themselves():
    ids, valid = _batch(np.random.default_rng(3), B=2, T=4)
    with pytest.raises(TypeError, match="rng"):
        mask_tokens(ids, valid, 0, MASK_ID, (FIRST_CHAR, V))
    with pytest.raises(ValueError, match="valid"):
        mask_tokens(ids, valid[:, :2], np.random.default_rng(0), MASK_ID, (FIRST_CHAR, V))
    with pytest.raises(ValueError, match="mask_prob"):
        mask_tokens(ids, valid, np.random.default_rng(0), MASK_ID, (FIRST_CHAR, V), mask_prob=0.0)


TINY = dict(d_model=8, n_heads=2, n_layers=2, d_ff=16, max_len=8, dropout=0.0, dtype=np.float64)
IDS = np.array([[CLS, 7, MASK_ID, 9, 10], [CLS, MASK_ID, 8, PAD, PAD]])
VALID = IDS != PAD
TARGETS = np.array([[IGNORE_INDEX, IGNORE_INDEX, 6, IGNORE_INDEX, IGNORE_INDEX],
                    [IGNORE_INDEX, 3, IGNORE_INDEX, IGNORE_INDEX, IGNORE_INDEX]])


@pytest.mark.parametrize("tie_weights", [True, False])
def test_mlm_head_and_loss_gradients_match_numerical_ones(tie_weights):
    """The whole MLM model in float64, through the masked loss (only chosen positions count)."""
    model = TransformerMLM(11, tie_weights=tie_weights, activation="gelu", **TINY)
    params = dict(model.named_parameters())
    inputs = {name: p.data for name, p in params.items()}

    def forward(**_):
        return F.cross_entropy(model(IDS, VALID), TARGETS)[0]

    def backward(dloss, **_):
        model.zero_grad()
        _, cache = F.cross_entropy(model(IDS, VALID), TARGETS)
        model.backward(F.cross_entropy_backward(dloss, cache))
        return {name: p.grad.copy() for name, p in params.items()}

    results = check_gradients(forward, backward, inputs)
    assert set(results) == set(params)
    for r in results.values():
        assert r.max_rel_error <= 1e-5, str(r)


def test_mlm_sees_both_sides_and_ignores_padding():
    model = TransformerMLM(11, **TINY)
    model.eval()
    ids = np.array([[CLS, 6, 7, 8, 9]])
    changed = ids.copy()
    changed[0, 4] = 10
    # position 1 changes when a *later* token changes: bidirectional (a causal LM's would not)
    assert not np.allclose(model(ids)[0, 1], model(changed)[0, 1])
    padded = np.array([[CLS, 6, 7, PAD, PAD]])
    np.testing.assert_allclose(model(padded, padded != PAD)[0, :3], model(padded[:, :3])[0], atol=1e-12)


def test_output_layer_at_chosen_positions_only_gives_the_same_loss_and_gradients():
    model = TransformerMLM(11, activation="gelu", **TINY)
    chosen = TARGETS != IGNORE_INDEX
    model.zero_grad()
    loss, cache = F.cross_entropy(model(IDS, VALID), TARGETS)
    model.backward(F.cross_entropy_backward(1.0, cache))
    full = {n: p.grad.copy() for n, p in model.named_parameters()}
    model.zero_grad()
    loss2, cache2 = F.cross_entropy(model(IDS, VALID, positions=chosen), TARGETS[chosen])
    model.backward(F.cross_entropy_backward(1.0, cache2))
    np.testing.assert_allclose(float(loss2), float(loss), rtol=1e-12)
    for n, p in model.named_parameters():
        np.testing.assert_allclose(p.grad, full[n], atol=1e-12, err_msg=n)


# --------------------------------------------------------------------------- #
# pretrain(objective="mlm")
# --------------------------------------------------------------------------- #

def _mlm_setup():
    from numpy_transformer.pretrain import PretrainConfig
    from numpy_transformer.tokenizer import MASK, CharTokenizer
    V = 23
    rng = np.random.default_rng(0)
    train = (np.arange(3000) % 7 + 6 + rng.integers(0, 3, 3000)).astype(np.int32) % V
    held = {"a": (np.arange(400) % 7 + 6 + rng.integers(0, 3, 400)).astype(np.int32) % V}
    tok = CharTokenizer([chr(0x4E00 + i) for i in range(V - 6)], extra_special=(MASK,))

    def model(seed=1, dropout=0.1):
        return TransformerMLM(V, d_model=8, n_heads=2, n_layers=1, d_ff=16, max_len=8, dropout=dropout, seed=seed)

    def config(**kw):
        return PretrainConfig(**{**dict(steps=8, batch_size=4, lr=3e-3, warmup_steps=2, eval_every=3,
                                        eval_batch_size=4, objective="mlm"), **kw})
    return train, held, tok, model, config


def test_mlm_pretraining_learns_the_masked_characters(tmp_path):
    from numpy_transformer.checkpoint import load
    from numpy_transformer.pretrain import evaluate_masked, pretrain
    train, held, tok, model, config = _mlm_setup()
    m = model(dropout=0.0)
    before = evaluate_masked(m, held["a"])["bits"]
    hist = pretrain(m, tok, train, held, config(steps=120, eval_every=60, lr=1e-2), out_dir=tmp_path,
                    progress=False, log=None)
    assert hist.heldout_bits["a"][-1] < before - 1.0
    assert type(load(tmp_path / "best.npz").model).__name__ == "TransformerMLM"   # registered for `load`


def test_a_resumed_mlm_run_draws_the_same_masks(tmp_path):
    from numpy_transformer.pretrain import pretrain
    train, held, tok, model, config = _mlm_setup()
    full = []
    pretrain(model(), tok, train, held, config(), out_dir=tmp_path / "full", progress=False, log=None,
             on_step=lambda s, loss: full.append(loss))
    cut = []

    def stop_at_5(step, loss):
        cut.append(loss)
        if step == 5:
            raise KeyboardInterrupt
    with pytest.raises(KeyboardInterrupt):
        pretrain(model(), tok, train, held, config(), out_dir=tmp_path / "cut", progress=False, log=None,
                 on_step=stop_at_5)
    pretrain(model(seed=9), tok, train, held, config(), out_dir=tmp_path / "cut", progress=False, log=None,
             resume_from=tmp_path / "cut" / "last.npz", on_step=lambda s, loss: cut.append(loss))
    assert cut == full

