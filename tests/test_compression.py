"""Model compression: masks that stay, heads that really go, formats that load back, the `compress` command.

The formulas (gates, straight-through estimators, int8) are gradient-checked in
test_functional.py and test_nn.py; here are the model-level promises.
"""

import copy
import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from numpy_transformer import compression as C
from numpy_transformer import functional as F
from numpy_transformer.checkpoint import CheckpointError
from numpy_transformer.cli import main
from numpy_transformer.data import Dataset
from numpy_transformer.models import TransformerClassifier
from numpy_transformer.tokenizer import CharTokenizer

POSITIVE = ["这本书很好看，我很喜欢", "质量不错，推荐购买", "非常满意，物流也快", "内容精彩，值得一读", "好用，下次还买"]
NEGATIVE = ["太差了，不推荐", "质量很差，很失望", "内容无聊，浪费时间", "物流太慢，服务差", "不好用，退货了"]


def tiny_data(n=40):
    texts = [f"{POSITIVE[i % 5]}{i}" for i in range(n // 2)] + [f"{NEGATIVE[i % 5]}{i}" for i in range(n // 2)]
    return Dataset(texts=texts, labels=np.array([1] * (n // 2) + [0] * (n // 2)))


def tiny_model(seed=0, n_heads=4, norm="pre", pooling="mean", dtype=np.float32):
    data = tiny_data()
    tok = CharTokenizer.build(data.texts)
    model = TransformerClassifier(tok.vocab_size, 2, d_model=8, n_heads=n_heads, n_layers=2, d_ff=16, max_len=24,
                                  dropout=0.0, norm=norm, pooling=pooling, seed=seed, dtype=dtype)
    return model.eval(), tok, data


def logits_of(model, tok, texts):
    ids, mask = tok.encode_batch(texts, 24, add_cls=True)
    return np.asarray(model(ids, mask), dtype=np.float64)


# --------------------------------------------------------------------------- #
# Magnitude pruning and masks
# --------------------------------------------------------------------------- #

@given(sparsity=st.floats(0.0, 0.95), seed=st.integers(0, 100))
@settings(max_examples=10)
def test_per_layer_masks_remove_exactly_the_smallest_fraction_of_each_matrix(sparsity, seed):
    model, _, _ = tiny_model(seed)
    masks = C.magnitude_masks(model, sparsity, "layer")
    params = dict(model.named_parameters())
    assert set(masks) == {name for name, _ in C.weight_matrices(model)}
    for name, mask in masks.items():
        w = np.abs(params[name].data)
        assert (~mask).sum() == int(np.floor(sparsity * w.size))
        if (~mask).any() and mask.any():
            assert w[~mask].max() <= w[mask].min()


def test_global_masks_share_one_threshold():
    model, _, _ = tiny_model()
    masks = C.magnitude_masks(model, 0.6, "global")
    params = dict(model.named_parameters())
    pruned = np.concatenate([np.abs(params[n].data[~m]) for n, m in masks.items()])
    kept = np.concatenate([np.abs(params[n].data[m]) for n, m in masks.items()])
    assert pruned.max() <= kept.min()
    total = sum(m.size for m in masks.values())
    assert abs(len(pruned) / total - 0.6) < 1e-2
    fractions = [1 - m.mean() for m in masks.values()]
    assert max(fractions) - min(fractions) > 0.1          # unlike per layer, matrices lose different fractions


def test_masked_weights_get_zero_gradient_and_stay_zero_while_fine_tuning():
    model, tok, data = tiny_model()
    model.drop.p = 0.0
    masks = C.magnitude_masks(model, 0.7)
    C.finetune(model, data, tok, C.FinetuneConfig(steps=8, batch_size=8, lr=1e-2, max_len=24), masks=masks)
    params = dict(model.named_parameters())
    for name, mask in masks.items():
        assert (params[name].data[~mask] == 0).all(), name
        assert (params[name].grad[~mask] == 0).all(), name
        assert (params[name].data[mask] != 0).all(), name        # the survivors did move and are not zero
    assert abs(C.sparsity_of(model) - 0.7) < 0.01


def test_fine_tuning_without_masks_would_revive_pruned_weights():
    """The control for the test above: the masks are what keeps them at zero."""
    model, tok, data = tiny_model()
    masks = C.magnitude_masks(model, 0.7)
    C.apply_masks(model, masks)
    C.finetune(model, data, tok, C.FinetuneConfig(steps=3, batch_size=8, lr=1e-2, max_len=24))
    assert C.sparsity_of(model) < 0.1


def test_cubic_schedule_rises_fast_then_slowly_to_the_final_sparsity():
    s = [C.cubic_sparsity(t, 0.9, 10, 110) for t in range(0, 130)]
    assert s[0] == s[10] == 0.0 and s[110] == s[129] == pytest.approx(0.9)
    steps = np.diff(s[10:111])
    assert (steps >= 0).all() and steps[0] > steps[-1] * 10
    assert C.cubic_sparsity(60, 0.9, 10, 110) == pytest.approx(0.9 * (1 - 0.5 ** 3))


def test_gradual_pruning_reaches_the_final_sparsity():
    model, tok, data = tiny_model()
    C.finetune(model, data, tok, C.FinetuneConfig(steps=30, batch_size=8, max_len=24),
               sparsity_schedule=lambda t: C.cubic_sparsity(t, 0.8, 0, 20))
    assert abs(C.sparsity_of(model) - 0.8) < 0.01


# --------------------------------------------------------------------------- #
# Structured pruning
# --------------------------------------------------------------------------- #

@pytest.mark.parametrize("norm", ["pre", "post", "parallel"])
def test_removing_heads_equals_gating_them_off_and_shrinks_the_matrices(norm):
    model, tok, data = tiny_model(norm=norm)
    remove = {0: [1, 3], 1: [0]}
    small = C.prune_heads(model, remove)
    assert [s["n_heads"] for s in C.structure_of(small)] == [2, 3]
    assert small.encoder.blocks[0].attn.W_qkv.shape == (8, 3 * 2 * 2)
    assert small.encoder.blocks[0].attn.W_o.shape == (2 * 2, 8)
    assert small.num_parameters() < model.num_parameters()
    # the reference: the same model with those heads' gates at 0
    for l, heads in remove.items():
        attn = model.encoder.blocks[l].attn
        attn.gate = C.Parameter(np.ones(attn.n_heads, dtype=np.float32))
        attn.gate.data[heads] = 0.0
    np.testing.assert_allclose(logits_of(small, tok, data.texts), logits_of(model, tok, data.texts),
                               rtol=1e-5, atol=1e-5)


def test_removing_ffn_neurons_equals_zeroing_them():
    model, tok, data = tiny_model()
    small = C.prune_ffn(model, 0.5)
    assert [s["d_ff"] for s in C.structure_of(small)] == [8, 8]
    for block in model.encoder.blocks:
        scores = C.ffn_neuron_scores(block.ffn)
        drop = np.argsort(-scores, kind="stable")[8:]
        block.ffn.W2.data[drop] = 0.0
        assert scores[drop].max() <= np.sort(scores)[-8]             # the weakest neurons went
    np.testing.assert_allclose(logits_of(small, tok, data.texts), logits_of(model, tok, data.texts),
                               rtol=1e-5, atol=1e-5)


def test_head_importance_is_the_mean_absolute_gate_gradient_and_leaves_the_model_unchanged():
    model, tok, data = tiny_model(dtype=np.float64)
    before = logits_of(model, tok, data.texts)
    names = [n for n, _ in model.named_parameters()]
    imp = C.head_importance(model, data, tok, max_len=24, batch_size=40, max_batches=1)
    assert imp.shape == (2, 4)
    np.testing.assert_allclose(np.linalg.norm(imp, axis=1), 1.0)
    assert [n for n, _ in model.named_parameters()] == names        # the gates are gone again
    np.testing.assert_array_equal(logits_of(model, tok, data.texts), before)
    # by hand: one batch with every text, gradient of the loss w.r.t. a gate, by central differences
    ids, mask = tok.encode_batch(data.texts, 24, add_cls=True)
    attn = model.encoder.blocks[1].attn
    attn.gate = C.Parameter(np.ones(4))

    def loss(g):
        attn.gate.data[2] = g
        return float(F.cross_entropy(model(ids, mask), data.labels)[0])
    grads = []
    for h in range(4):
        attn.gate.data[...] = 1.0

        def loss_h(g, h=h):
            attn.gate.data[h] = g
            return float(F.cross_entropy(model(ids, mask), data.labels)[0])
        grads.append(abs(loss_h(1 + 1e-5) - loss_h(1 - 1e-5)) / 2e-5)
    grads = np.array(grads)
    np.testing.assert_allclose(imp[1], grads / np.linalg.norm(grads), rtol=1e-4)


def test_heads_to_prune_takes_the_least_important_and_keeps_one_per_layer():
    imp = np.array([[0.1, 0.2, 0.9, 0.8], [0.05, 0.01, 0.03, 0.02]])
    assert C.heads_to_prune(imp, 0.5) == {0: [0], 1: [1, 2, 3]}
    with pytest.raises(ValueError, match="fraction"):
        C.heads_to_prune(imp, 1.0)


# --------------------------------------------------------------------------- #
# Quantization, QAT, distillation
# --------------------------------------------------------------------------- #

@pytest.mark.parametrize("norm,pooling", [("pre", "mean"), ("post", "cls"), ("parallel", "mean")])
def test_int8_inference_is_close_to_float(norm, pooling):
    model, tok, data = tiny_model(norm=norm, pooling=pooling)
    exact = logits_of(model, tok, data.texts)
    int8 = logits_of(C.Int8Classifier(model), tok, data.texts)
    assert np.abs(int8 - exact).max() < 0.05 * np.abs(exact).max() + 1e-3
    assert (int8.argmax(1) == exact.argmax(1)).mean() >= 0.9


def test_int8_inference_multiplies_integers():
    """Each product is int8 x int8 in int32: the engine's result equals a float product of the integer values."""
    model, tok, data = tiny_model()
    engine = C.Int8Classifier(model)
    seen = []
    original = F.int8_linear

    def spy(x, q, s, b=None):
        assert q.dtype == np.int8
        seen.append(q.shape)
        return original(x, q, s, b)
    C.F.int8_linear = spy
    try:
        logits_of(engine, tok, data.texts[:2])
    finally:
        C.F.int8_linear = original
    assert len(seen) == 2 * 4 + 1                  # W_qkv, W_o, W1, W2 per layer, and the head


@pytest.mark.parametrize("qat", ["int8", "binary"])
def test_quantization_aware_training_updates_float_shadow_weights(qat):
    model, tok, data = tiny_model()
    targets = dict(C.qat_targets(model, qat))
    before = {n: p.data.copy() for n, p in targets.items()}
    losses = C.finetune(model, data, tok, C.FinetuneConfig(steps=20, batch_size=8, lr=3e-3, max_len=24), qat=qat)
    for name, p in targets.items():
        assert not np.array_equal(p.data, before[name])                      # they learned
        if qat == "binary":
            assert len(np.unique(np.abs(p.data))) > p.shape[1]               # still float, not two values
    assert np.mean(losses[-5:]) < np.mean(losses[:5])


def test_distillation_with_hard_labels_follows_the_teacher_not_the_data():
    model, tok, data = tiny_model()
    # a teacher that says the opposite of the labels
    teacher = np.where(data.labels[:, None] == np.arange(2)[None], -3.0, 3.0).astype(np.float32)
    C.finetune(model, data, tok, C.FinetuneConfig(steps=150, batch_size=8, lr=3e-3, max_len=24),
               teacher_logits=teacher, hard_labels=True)
    assert (logits_of(model, tok, data.texts).argmax(1) != data.labels).mean() > 0.9


def test_soft_distillation_with_alpha_one_matches_the_teachers_probabilities():
    """A soft teacher (73 % sure, and of the wrong class): with alpha = 1 the student copies its uncertainty."""
    model, tok, data = tiny_model()
    teacher = np.where(data.labels[:, None] == np.arange(2)[None], -0.5, 0.5).astype(np.float32)
    C.finetune(model, data, tok, C.FinetuneConfig(steps=150, batch_size=8, lr=3e-3, max_len=24, alpha=1.0,
                                                  temperature=1.0), teacher_logits=teacher)
    p_student = F.softmax(logits_of(model, tok, data.texts))[0]
    p_teacher = F.softmax(teacher.astype(np.float64))[0]
    assert np.abs(p_student - p_teacher).mean() < 0.1


# --------------------------------------------------------------------------- #
# Compressed checkpoints
# --------------------------------------------------------------------------- #

def reference_for(model, encoding):
    """The in-memory model a file in ``encoding`` should reproduce."""
    ref = copy.deepcopy(model)
    for name, p in C.weight_matrices(ref):
        if encoding in ("int8", "int8_sparse"):
            p.data = F.fake_quantize_int8(p.data)[0]
        elif encoding == "binary":
            p.data = F.binarize(p.data)[0]
    return ref


@pytest.mark.parametrize("encoding", C.ENCODINGS)
def test_compressed_checkpoints_load_and_predict_like_the_model_in_memory(encoding, tmp_path):
    model, tok, data = tiny_model()
    C.apply_masks(model, C.magnitude_masks(model, 0.5))
    path = C.save_compressed(tmp_path / f"{encoding}.npz", model, tok, encoding=encoding)
    loaded = C.load_compressed(path)
    assert C.is_compressed(path) and loaded.method == encoding
    expected = logits_of(reference_for(model, encoding), tok, data.texts)
    got = logits_of(loaded.model, tok, data.texts)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)
    assert CharTokenizer.from_dict(loaded.tokenizer).vocab_size == tok.vocab_size


def test_file_sizes_follow_the_encoding(tmp_path):
    model, tok, _ = tiny_model()
    model = TransformerClassifier(tok.vocab_size, 2, d_model=128, n_heads=4, n_layers=1, d_ff=512, max_len=24)
    C.apply_masks(model, C.magnitude_masks(model, 0.9))
    size = {enc: C.save_compressed(tmp_path / f"{enc}.npz", model, tok, encoding=enc).stat().st_size
            for enc in C.ENCODINGS}
    assert size["float32"] / size["int8"] > 3.5
    assert size["float32"] / size["sparse"] > 4
    assert size["float32"] / size["binary"] > 15
    assert size["int8_sparse"] < size["sparse"]


def test_int8_compute_checkpoint_runs_the_int8_engine(tmp_path):
    model, tok, data = tiny_model()
    small = C.prune_heads(model, {0: [0]})
    path = C.save_compressed(tmp_path / "q.npz", small, tok, encoding="int8", compute="int8")
    loaded = C.load_compressed(path).model
    assert isinstance(loaded, C.Int8Classifier)
    np.testing.assert_allclose(logits_of(loaded, tok, data.texts), logits_of(C.Int8Classifier(small), tok, data.texts),
                               rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="compute: 'int8' needs every weight matrix in int8"):
        C.save_compressed(tmp_path / "bad.npz", model, tok, encoding="sparse", compute="int8")


def test_structured_pruned_checkpoint_keeps_its_smaller_shapes(tmp_path):
    model, tok, data = tiny_model()
    small = C.prune_ffn(C.prune_heads(model, {1: [2, 3]}), 0.25)
    path = C.save_compressed(tmp_path / "s.npz", small, tok, encoding="float32")
    loaded = C.load_compressed(path).model
    assert C.structure_of(loaded) == C.structure_of(small)
    np.testing.assert_array_equal(logits_of(loaded, tok, data.texts), logits_of(small, tok, data.texts))


def test_bad_compressed_files_raise_one_checkpoint_error(tmp_path):
    model, tok, _ = tiny_model()
    path = C.save_compressed(tmp_path / "ok.npz", model, tok)
    truncated = tmp_path / "truncated.npz"
    truncated.write_bytes(path.read_bytes()[:200])
    with pytest.raises(CheckpointError, match="truncated.npz"):
        C.load_compressed(truncated)
    assert not C.is_compressed(truncated)
    with pytest.raises(CheckpointError, match="no such file"):
        C.load_compressed(tmp_path / "missing.npz")
    np.savez(tmp_path / "other.npz", a=np.ones(3))
    with pytest.raises(CheckpointError, match="not a compressed checkpoint"):
        C.load_compressed(tmp_path / "other.npz")


# --------------------------------------------------------------------------- #
# The `compress` command
# --------------------------------------------------------------------------- #

# the tiny training flags and the 100-review TSV fixture of the CLI tests
from test_cli import TINY, tsv  # noqa: E402,F401  (tsv is a pytest fixture)


@pytest.fixture(scope="module")
def trained(tsv, tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    assert main(["train", "--data", str(tsv), "--out", str(out)] + TINY) == 0
    return out / "classifier.npz"


@pytest.mark.parametrize("action", [
    ["prune", "--sparsity", "0.5", "--finetune-steps", "3"],
    ["prune", "--sparsity", "0.8", "--gradual", "--finetune-steps", "20", "--scope", "global"],
    ["heads", "--fraction", "0.5", "--ffn-fraction", "0.25", "--finetune-steps", "2"],
    ["quantize", "--to", "int8"],
    ["quantize", "--to", "int8", "--compute", "int8", "--qat-steps", "2"],
    ["quantize", "--to", "binary", "--qat-steps", "2"],
], ids=["prune", "gradual", "heads", "int8", "int8-compute-qat", "binary"])
def test_compress_actions_write_files_that_predict_and_evaluate_load(action, trained, tsv, tmp_path, capsys):
    out = tmp_path / "c.npz"
    assert main(["compress", action[0], str(trained)] + action[1:] + ["--data", str(tsv), "--out", str(out)]) == 0
    assert C.is_compressed(out)
    assert main(["predict", str(out), "很好看", "太差了"]) == 0
    assert main(["evaluate", str(out), "--data", str(tsv)]) == 0
    assert main(["compress", "report", str(trained), str(out), "--data", str(tsv), "--timing-reviews", "4"]) == 0
    assert "accuracy" in capsys.readouterr().out


@pytest.mark.parametrize("length_mix", [True, False])
def test_compress_distill_writes_a_student(length_mix, trained, tsv, tmp_path, capsys):
    from numpy_transformer.checkpoint import load
    out = tmp_path / "student.npz"
    flag = ["--length-mix"] if length_mix else []                # off by default
    assert main(["compress", "distill", str(trained), "--d-model", "4", "--heads", "1", "--d-ff", "8",
                 "--steps", "3", "--data", str(tsv), "--out", str(out)] + flag) == 0
    printed = capsys.readouterr().out
    assert "student" in printed and ("(--length-mix)" in printed) == length_mix
    assert load(out).extra["distillation"]["length_mix"] is length_mix
    assert main(["predict", str(out), "很好看"]) == 0


@pytest.mark.parametrize("args,message", [
    (["prune", "{ckpt}", "--sparsity", "1.0", "--out", "{tmp}/a.npz"], "--sparsity: expected a fraction in [0, 1)"),
    (["prune", "{ckpt}", "--sparsity", "0.5", "--out", "{tmp}"], "--out: '{tmp}' is a folder"),
    (["prune", "{ckpt}", "--sparsity", "0.5", "--out", "{tmp}/a.txt"], "--out: expected a file name ending in .npz"),
    (["prune", "{ckpt}", "--sparsity", "0.5", "--gradual", "--out", "{tmp}/a.npz"], "--gradual: needs --finetune-steps"),
    (["prune", "{ckpt}", "--sparsity", "0.5", "--finetune-steps", "-1", "--out", "{tmp}/a.npz"],
     "--finetune-steps: expected a number of steps >= 0"),
    (["prune", "{tmp}/missing.npz", "--sparsity", "0.5", "--out", "{tmp}/a.npz"], "does not exist"),
    (["heads", "{ckpt}", "--fraction", "-0.1", "--out", "{tmp}/a.npz"], "--fraction: expected a fraction"),
    (["heads", "{ckpt}", "--ffn-fraction", "1.5", "--out", "{tmp}/a.npz"], "--ffn-fraction: expected a fraction"),
    (["quantize", "{ckpt}", "--to", "binary", "--compute", "int8", "--out", "{tmp}/a.npz"],
     "--compute int8: only with --to int8"),
    (["quantize", "{ckpt}", "--qat-steps", "-2", "--out", "{tmp}/a.npz"], "--qat-steps: expected a number of steps"),
    (["quantize", "{compressed}", "--out", "{tmp}/a.npz"], "is already compressed"),
    (["distill", "{ckpt}", "--alpha", "1.5", "--out", "{tmp}/a.npz"], "--alpha: expected a fraction in [0, 1]"),
    (["distill", "{ckpt}", "--temperature", "0", "--out", "{tmp}/a.npz"], "--temperature: expected a positive"),
    (["distill", "{ckpt}", "--d-model", "6", "--heads", "4", "--out", "{tmp}/a.npz"], "student: n_heads"),
    (["report", "{ckpt}", "--timing-reviews", "0"], "--timing-reviews: expected a positive number"),
])
def test_compress_errors_are_one_line_naming_the_flag(args, message, trained, tsv, tmp_path, capsys):
    compressed = tmp_path / "c.npz"
    model, tok, _ = tiny_model()
    C.save_compressed(compressed, model, tok)
    fill = dict(ckpt=str(trained), tmp=str(tmp_path), compressed=str(compressed))
    argv = ["compress"] + [a.format(**fill) for a in args] + ["--data", str(tsv)]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err
    assert message.format(**fill) in err
    assert not (tmp_path / "a.npz").exists()


# --------------------------------------------------------------------------- #
# Models of the long-text chapter (RoPE, ALiBi, local attention)
# --------------------------------------------------------------------------- #

def long_text_model(**options):
    data = tiny_data()
    tok = CharTokenizer.build(data.texts)
    model = TransformerClassifier(tok.vocab_size, 2, d_model=8, n_heads=4, n_layers=2, d_ff=16, max_len=24,
                                  dropout=0.0, seed=0, **options)
    return model.eval(), tok, data


@pytest.mark.parametrize("options,named", [
    (dict(pos_encoding="rope"), "position='rope'"),
    (dict(pos_encoding="alibi"), "position='alibi'"),
    (dict(attention="local", window=3), "local_window=3"),
])
def test_int8_engine_refuses_relative_positions_and_local_attention(options, named):
    model, _, _ = long_text_model(**options)
    with pytest.raises(ValueError, match=r"model: Int8Classifier .*" + named.replace("(", r"\(")):
        C.Int8Classifier(model)


@pytest.mark.parametrize("options", [dict(pos_encoding="rope"), dict(attention="local", window=3)],
                         ids=["rope", "local"])
def test_removing_heads_keeps_rope_and_local_attention(options):
    model, tok, data = long_text_model(**options)
    small = C.prune_heads(model, {0: [1, 3]})
    attn, old = small.encoder.blocks[0].attn, model.encoder.blocks[0].attn
    assert (attn.position, attn.local_window, attn.global_tokens) == (old.position, old.local_window,
                                                                      old.global_tokens)
    old.gate = C.Parameter(np.ones(4, dtype=np.float32))
    old.gate.data[[1, 3]] = 0.0
    np.testing.assert_allclose(logits_of(small, tok, data.texts), logits_of(model, tok, data.texts),
                               rtol=1e-5, atol=1e-5)


def test_removing_heads_refuses_alibi_whose_slopes_depend_on_the_number_of_heads():
    model, _, _ = long_text_model(pos_encoding="alibi")
    with pytest.raises(ValueError, match="ALiBi"):
        C.prune_heads(model, {0: [1]})


# --------------------------------------------------------------------------- #
# Fine-tuned language models (transfer.TransferClassifier: causal mask, "last" pooling)
# --------------------------------------------------------------------------- #

def fine_tuned_model(pooling):
    """A tiny classifier shaped like what `train --init-from` and `make demo` write: causal, mean or last pooling."""
    from numpy_transformer.transfer import TransferClassifier
    data = tiny_data()
    tok = CharTokenizer.build(data.texts)
    model = TransferClassifier(tok.vocab_size, 2, d_model=8, n_heads=4, n_layers=2, d_ff=16, max_len=24,
                               dropout=0.0, norm="pre", activation="gelu", pooling=pooling, causal=True, seed=1)
    return model.eval(), tok, data


@pytest.mark.parametrize("pooling", ["mean", "last"])
def test_int8_engine_keeps_the_causal_mask_and_the_pooling_of_a_fine_tuned_model(pooling):
    model, tok, data = fine_tuned_model(pooling)
    exact = logits_of(model, tok, data.texts)
    int8 = logits_of(C.Int8Classifier(model), tok, data.texts)
    # int8 rounding moves these logits by about 3 % of their largest value; forgetting the causal mask moves
    # them by 35-50 %, pooling the wrong positions by 75 % and more
    assert np.abs(int8 - exact).max() < 0.1 * np.abs(exact).max()


@pytest.mark.parametrize("encoding", ["float32", "int8", "sparse", "binary"])
@pytest.mark.parametrize("pooling", ["mean", "last"])
def test_compressed_fine_tuned_models_load_back_as_themselves(encoding, pooling, tmp_path):
    model, tok, data = fine_tuned_model(pooling)
    small = C.prune_heads(model, {1: [0, 2]})
    path = C.save_compressed(tmp_path / "ft.npz", small, tok, encoding=encoding)
    loaded = C.load_compressed(path).model
    assert type(loaded).__name__ == "TransferClassifier" and loaded.causal and loaded.pooling == pooling
    assert loaded.encoder.blocks[1].attn.n_heads == 2
    np.testing.assert_allclose(logits_of(loaded, tok, data.texts), logits_of(reference_for(small, encoding), tok,
                                                                             data.texts), rtol=1e-5, atol=1e-5)


def test_a_compressed_file_naming_an_unknown_class_is_one_checkpoint_error(tmp_path):
    model, tok, _ = tiny_model()
    path = C.save_compressed(tmp_path / "q.npz", model, tok)
    with np.load(path) as npz:
        arrays = dict(npz)
    header = json.loads(arrays["header"].tobytes().decode("utf-8"))
    header["model"]["class"] = "TransformerLM"                  # registered, but not a classifier
    arrays["header"] = np.frombuffer(json.dumps(header).encode("utf-8"), dtype=np.uint8)
    np.savez(tmp_path / "lm.npz", **arrays)
    with pytest.raises(CheckpointError, match="expected a TransformerClassifier .*'TransformerLM'"):
        C.load_compressed(tmp_path / "lm.npz")


from test_cli import INIT_FLAGS, tiny_lm  # noqa: E402,F401  (tiny_lm is a pytest fixture)


@pytest.mark.parametrize("action", [
    ["quantize", "--to", "int8", "--compute", "int8"],
    ["heads", "--fraction", "0.5", "--finetune-steps", "2"],
    ["prune", "--sparsity", "0.5", "--finetune-steps", "2"],
    ["distill", "--d-model", "4", "--heads", "1", "--d-ff", "8", "--steps", "3"],
], ids=["int8", "heads", "prune", "distill"])
def test_compress_takes_the_fine_tuned_model_that_make_demo_writes(action, tsv, tiny_lm, tmp_path, capsys):
    run = tmp_path / "ft"
    assert main(["train", "--data", str(tsv), "--init-from", str(tiny_lm), "--out", str(run)] + INIT_FLAGS) == 0
    out = tmp_path / "c.npz"
    assert main(["compress", action[0], str(run / "classifier.npz")] + action[1:]
                + ["--data", str(tsv), "--out", str(out)]) == 0, capsys.readouterr().err
    assert main(["predict", str(out), "很好看", "太差了"]) == 0
    assert main(["evaluate", str(out), "--data", str(tsv)]) == 0
    assert "accuracy" in capsys.readouterr().out
