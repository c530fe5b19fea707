"""Tests for numpy_transformer.zeroshot: prototypes, calibration, draws, label words, embeddings, fine-tuning."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from numpy_transformer import functional as F
from numpy_transformer import zeroshot as Z
from numpy_transformer.gradcheck import check_gradients
from numpy_transformer.models import TransformerClassifier, TransformerLM
from numpy_transformer.tokenizer import EOS_ID, CharTokenizer

TEXTS = ["这本书很好看", "太差了，不推荐", "酒店服务很好", "质量很差，很失望", "非常满意", "N/A"]
TOK = CharTokenizer.build(TEXTS + ["总之，这次体验很好差。"])


def tiny_lm(dtype=np.float64, **kw):
    kw = {"d_model": 8, "n_heads": 2, "n_layers": 2, "d_ff": 16, "max_len": 24, "dropout": 0.0, "seed": 3, **kw}
    return TransformerLM(TOK.vocab_size, dtype=dtype, **kw)


# --------------------------------------------------------------------------- #
# Prototypes on toy embeddings where the answer is known
# --------------------------------------------------------------------------- #

def test_prototypes_are_class_means_in_class_order():
    e = np.array([[1.0, 0.0], [3.0, 0.0], [0.0, 2.0], [0.0, 4.0]])
    protos = Z.class_prototypes(e, np.array([1, 1, 0, 0]), 2)               # class 1 listed first
    np.testing.assert_allclose(protos, [[0.0, 3.0], [2.0, 0.0]])          # row c is class c all the same


def test_prototype_prediction_on_a_toy_embedding():
    # class 0 around (1, 0), class 1 around (0, 3): the cosine looks at directions only, the Euclidean
    # distance also at lengths, so the two disagree on the 2nd and 4th query (worked out by hand)
    support = np.array([[1.0, 0.1], [1.0, -0.1], [0.1, 3.0], [-0.1, 3.0]])
    protos = Z.class_prototypes(support, np.array([0, 0, 1, 1]), 2)
    np.testing.assert_allclose(protos, [[1.0, 0.0], [0.0, 3.0]])
    queries = np.array([[2.0, 0.5], [0.8, 0.9], [0.2, 3.0], [-1.0, -0.1]])
    for metric, want in (("cosine", [0, 1, 1, 1]), ("euclidean", [0, 0, 1, 0])):
        pred, scores = Z.prototype_predict(queries, protos, metric)
        np.testing.assert_array_equal(pred, want, err_msg=metric)
        np.testing.assert_array_equal(scores.argmax(1), pred)
    d = Z.prototype_distances(queries, protos, "euclidean")
    np.testing.assert_allclose(d, ((queries[:, None, :] - protos[None]) ** 2).sum(-1))
    d = Z.prototype_distances(queries, protos, "cosine")
    cos = queries @ protos.T / np.linalg.norm(queries, axis=1)[:, None] / np.linalg.norm(protos, axis=1)[None]
    np.testing.assert_allclose(d, 1 - cos)


def test_cosine_normalises_the_prototypes_too():
    # the mean of two unit vectors 90 degrees apart is shorter than a tight class's mean; a dot product
    # with unnormalised prototypes would send the query to the tight class, the cosine does not
    protos = Z.class_prototypes(np.array([[1.0, 0.0], [0.0, 1.0], [0.6, 0.8], [0.6, 0.8]]),
                                np.array([0, 0, 1, 1]), 2)
    query = np.array([[0.72, 0.69]])
    assert (query @ protos.T).argmax() == 1
    assert Z.prototype_predict(query, protos, "cosine")[0][0] == 0


def test_prototype_errors_name_the_argument():
    with pytest.raises(ValueError, match="class 1 has no example"):
        Z.class_prototypes(np.ones((2, 3)), np.array([0, 0]), 2)
    with pytest.raises(ValueError, match="metric"):
        Z.prototype_distances(np.ones((2, 3)), np.ones((2, 3)), "manhattan")
    with pytest.raises(ValueError, match="prototypes"):
        Z.prototype_distances(np.ones((2, 3)), np.ones((2, 4)))


# --------------------------------------------------------------------------- #
# Contextual calibration on hand-made probabilities
# --------------------------------------------------------------------------- #

def test_calibration_on_hand_made_probabilities():
    p = np.array([[0.7, 0.3], [0.6, 0.4], [0.9, 0.1]])
    cf = np.array([0.65, 0.35])           # the model leans to class 0 whatever the text
    q = Z.calibrate(p, cf)
    want = (p / cf) / (p / cf).sum(1, keepdims=True)
    np.testing.assert_allclose(q, want)
    np.testing.assert_allclose(q.sum(1), 1.0)
    np.testing.assert_array_equal(q.argmax(1), [0, 1, 0])     # the second text flips: 0.4/0.35 > 0.6/0.65
    np.testing.assert_allclose(Z.calibrate(cf[None], cf), [[0.5, 0.5]])    # content-free -> uniform
    np.testing.assert_allclose(Z.calibrate(p, [0.5, 0.5]), p)               # a fair model is unchanged
    with pytest.raises(ValueError, match="content_free"):
        Z.calibrate(p, [0.2, 0.3, 0.5])
    with pytest.raises(ValueError, match="content_free"):
        Z.calibrate(p, [1.0, 0.0])


# --------------------------------------------------------------------------- #
# Few-shot draws
# --------------------------------------------------------------------------- #

LABELS = np.array([0, 1] * 30 + [1] * 7)


def test_draws_are_reproducible_from_a_seed():
    a = Z.few_shot_draws(LABELS, 4, 10, np.random.default_rng(7))
    b = Z.few_shot_draws(LABELS, 4, 10, np.random.default_rng(7))
    c = Z.few_shot_draws(LABELS, 4, 10, np.random.default_rng(8))
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    assert a.shape == (10, 8) and a.dtype == np.int64


@given(k=st.integers(1, 30), n=st.integers(1, 5), seed=st.integers(0, 2**32 - 1))
@settings(max_examples=30, deadline=None)
def test_each_draw_has_k_distinct_examples_per_class_in_class_order(k, n, seed):
    draws = Z.few_shot_draws(LABELS, k, n, np.random.default_rng(seed))
    for d in draws:
        assert len(set(d.tolist())) == 2 * k
        np.testing.assert_array_equal(LABELS[d], [0] * k + [1] * k)


def test_draw_errors():
    with pytest.raises(ValueError, match="k: expected at most 30"):
        Z.few_shot_draws(LABELS, 31, 1, np.random.default_rng(0))
    with pytest.raises(TypeError, match="rng"):
        Z.few_shot_draws(LABELS, 1, 1, 0)
    with pytest.raises(ValueError, match="n_draws"):
        Z.few_shot_draws(LABELS, 1, 0, np.random.default_rng(0))


# --------------------------------------------------------------------------- #
# Sentence embeddings
# --------------------------------------------------------------------------- #

@pytest.mark.parametrize("pooling", ["mean", "last"])
@pytest.mark.parametrize("layers", ["last", "all"])
def test_embeddings_are_unit_vectors_and_do_not_depend_on_the_batch(pooling, layers):
    lm = tiny_lm()
    together = Z.sentence_embeddings(lm, TOK, TEXTS, pooling=pooling, layers=layers)
    alone = np.stack([Z.sentence_embeddings(lm, TOK, [t], pooling=pooling, layers=layers)[0] for t in TEXTS])
    np.testing.assert_allclose(np.linalg.norm(together, axis=1), 1.0)
    np.testing.assert_allclose(together, alone, atol=1e-12)         # padding in a batch changes nothing


def test_mean_embedding_is_the_mean_of_the_causal_states_after_the_prefix():
    lm = tiny_lm()
    ids = np.array([[EOS_ID] + TOK.encode(TEXTS[0])])
    h = Z.hidden_states(lm, ids, np.ones_like(ids, dtype=bool))[-1][0]     # (T, D)
    want = h[1:].mean(0) / np.linalg.norm(h[1:].mean(0))
    np.testing.assert_allclose(Z.sentence_embeddings(lm, TOK, TEXTS[:1])[0], want, atol=1e-12)
    # causal: a state does not change when later characters change
    ids2 = np.array([[EOS_ID] + TOK.encode(TEXTS[0][:3] + "差差差")])
    h2 = Z.hidden_states(lm, ids2, np.ones_like(ids2, dtype=bool))[-1][0]
    np.testing.assert_allclose(h[:4], h2[:4], atol=1e-12)


def test_classifier_trunk_embeds_too():
    clf = TransformerClassifier(TOK.vocab_size, 2, d_model=8, n_heads=2, n_layers=1, d_ff=16, max_len=24,
                                dropout=0.0, dtype=np.float64)
    e = Z.sentence_embeddings(clf, TOK, TEXTS)
    assert e.shape == (len(TEXTS), 8)
    with pytest.raises(TypeError, match="model"):
        Z.sentence_embeddings("not a model", TOK, TEXTS)


def test_centering_removes_the_common_direction():
    states = np.array([[[5.0, 1.0], [5.0, -1.0]]])                       # (L=1, N=2, D=2): cos = 0.92
    e = Z.combine_layers(states, center=Z.combine_layers(states).mean(0))
    np.testing.assert_allclose(e, [[0.0, 1.0], [0.0, -1.0]], atol=1e-12)


# --------------------------------------------------------------------------- #
# Label words
# --------------------------------------------------------------------------- #

def test_word_log_probs_equal_the_full_forward_pass():
    lm = tiny_lm()
    words = ["好", "差", "失望", "满意"]
    got = Z.word_log_probs(lm, TOK, TEXTS[:3], "{text}总之，这次体验很", words, batch_size=2)
    for n, text in enumerate(TEXTS[:3]):
        for j, w in enumerate(words):
            ids = np.array([[EOS_ID] + TOK.encode(text + "总之，这次体验很" + w)])
            logp, _ = F.log_softmax(lm.eval()(ids)[0])                     # (T, V)
            T, m = ids.shape[1], len(w)
            want = sum(logp[T - m - 1 + i, ids[0, T - m + i]] for i in range(m))
            np.testing.assert_allclose(got[n, j], want, atol=1e-10)


def test_label_word_classes_sum_their_words_probabilities():
    lm = tiny_lm()
    lw = Z.LabelWords("{text}总之，这次体验很", (("差", "失望"), ("好",)))
    per_word = Z.word_log_probs(lm, TOK, TEXTS, lw.template, ["差", "失望", "好"])
    got = Z.label_word_log_probs(lm, TOK, TEXTS, lw)
    np.testing.assert_allclose(np.exp(got[:, 0]), np.exp(per_word[:, 0]) + np.exp(per_word[:, 1]))
    np.testing.assert_allclose(Z.label_word_probs(got).sum(1), 1.0)
    cf = Z.content_free_probs(lm, TOK, lw)
    assert cf.shape == (2,) and abs(cf.sum() - 1) < 1e-12


def test_a_long_review_keeps_its_end_and_fits():
    lm = tiny_lm()
    lp = Z.word_log_probs(lm, TOK, ["好" * 100, ""], "{text}总之，这次体验很", ["好"])
    assert np.isfinite(lp).all()


def test_a_long_review_is_cut_at_its_start_so_that_its_end_meets_the_template():
    lm = tiny_lm()                                               # max_len 24: [EOS] + 22 characters + "很"
    end = "好看很差" * 5 + "满意"                                # 22 characters
    long, short = Z.word_log_probs(lm, TOK, ["失望" * 20 + end, end], "{text}很", ["好", "差"])
    np.testing.assert_allclose(long, short, atol=1e-12)


def test_label_word_errors():
    with pytest.raises(ValueError, match="template"):
        Z.LabelWords("总之，这次体验很", (("差",), ("好",)))
    with pytest.raises(ValueError, match="words"):
        Z.LabelWords("{text}很", (("差",),))
    with pytest.raises(ValueError, match="words"):
        Z.word_log_probs(tiny_lm(), TOK, TEXTS, "{text}很", ["棒"])     # not in the vocabulary
    with pytest.raises(TypeError, match="TransformerLM"):
        Z.word_log_probs(TransformerClassifier(TOK.vocab_size, 2, d_model=8, n_heads=2, n_layers=1, d_ff=8),
                         TOK, TEXTS, "{text}很", ["好"])


# --------------------------------------------------------------------------- #
# Fine-tuning the whole model: LMClassifier's backward pass
# --------------------------------------------------------------------------- #

@given(B=st.integers(1, 2), T=st.integers(1, 4), dims=st.sampled_from([(3, 1), (5, 1), (4, 2), (6, 3)]),
       seed=st.integers(0, 1000))
@settings(max_examples=8, deadline=None)
def test_lm_classifier_gradients(B, T, dims, seed):
    D, H = dims
    rng = np.random.default_rng(seed)
    lm = TransformerLM(11, d_model=D, n_heads=H, n_layers=1, d_ff=2 * D + 1, max_len=6, dropout=0.0,
                       activation="gelu", seed=seed, dtype=np.float64)
    model = Z.LMClassifier(lm, 3, rng=rng)
    model.head.W.data[...] = rng.standard_normal(model.head.W.data.shape)   # a zero head would hide the trunk
    ids = rng.integers(5, 11, size=(B, T))
    ids[:, 0] = EOS_ID
    mask = np.ones((B, T), dtype=bool)
    if B == 2 and T > 2:
        mask[1, -1] = False                                                 # one padded row
    params = dict(model.named_parameters())
    inputs = {name: p.data for name, p in params.items()}

    def forward(**_):
        return model(ids, mask)

    def backward(dout, **_):
        model.zero_grad()
        model(ids, mask)
        model.backward(dout)
        return {name: p.grad.copy() for name, p in params.items()}

    results = check_gradients(forward, backward, inputs, rng=rng, tol=1e-5)
    assert set(results) == set(params)


def test_fine_tune_learns_the_few_examples_and_leaves_the_lm_alone():
    lm = tiny_lm(np.float32, dropout=0.1)
    before = {k: v.copy() for k, v in lm.state_dict().items()}
    texts, labels = ["很好", "非常满意", "很差", "很失望"], np.array([1, 1, 0, 0])
    model = Z.fine_tune(lm, TOK, texts, labels, steps=40, lr=3e-3, seed=0)
    rows = Z._encode_texts(lm, TOK, texts, lm.max_len)
    np.testing.assert_array_equal(model.predict_scores(rows).argmax(1), labels)
    for k, v in lm.state_dict().items():
        np.testing.assert_array_equal(v, before[k])
    again = Z.fine_tune(lm, TOK, texts, labels, steps=40, lr=3e-3, seed=0)
    np.testing.assert_array_equal(again.predict_scores(rows), model.predict_scores(rows))


# --------------------------------------------------------------------------- #
# The experiments, end to end on a tiny model (numbers meaningless, shapes and bookkeeping checked)
# --------------------------------------------------------------------------- #

def test_experiments_run_end_to_end_on_a_tiny_model():
    lm = tiny_lm(np.float32)
    pos = ["很好", "非常满意", "好看", "推荐", "满意好"]
    neg = ["很差", "很失望", "太差了", "不推荐", "失望差"]
    texts = [t + str(i % 3) for i in range(4) for t in pos + neg]
    tok = CharTokenizer.build(texts + ["总之，这次体验很好差坏烂棒赞。感觉的来说这是一条评论N/A0123"])
    labels = np.array(([1] * 5 + [0] * 5) * 4)
    lm = TransformerLM(tok.vocab_size, d_model=8, n_heads=2, n_layers=2, d_ff=16, max_len=40, dropout=0.0)
    splits = {"pool": (texts, labels), "valid": (texts[:20], labels[:20]), "test": (texts[20:], labels[20:])}
    states = Z.embed_splits(lm, tok, {k: v[0] for k, v in splits.items()})
    kw = dict(ks=(1, 2), n_draws=3, finetune_ks=(2,), finetune_draws=1, finetune_steps=2, finetune_test=5,
              finetune_lrs=(1e-4, 1e-3),
              choose_k=2, choose_draws=2, log=None)
    few = Z.few_shot_experiment(lm, tok, splits, states, **kw)
    assert set(few["accuracy"]) == {"proto_cosine", "proto_euclidean", "lr_embedding", "tfidf_lr", "finetune",
                                    "proto_cosine_subset"}
    assert len(few["accuracy"]["proto_cosine"]["2"]) == 3 and len(few["accuracy"]["finetune"]["2"]) == 1
    assert "1" not in few["accuracy"]["finetune"]
    assert few["finetune"]["lr"] in (1e-4, 1e-3) and len(few["finetune"]["lr_valid"]) == 2
    again = Z.few_shot_experiment(lm, tok, splits, states, **kw)
    assert again["accuracy"] == few["accuracy"]                             # same seed, same numbers
    zero = Z.zero_shot_experiment(lm, tok, splits, states, log=None)
    assert len(zero["label_words"]) == 2 * len(Z.DEFAULT_TEMPLATES) * len(Z.DEFAULT_WORDS)
    assert zero["best_calibrated"]["calibrated"] and not zero["best_raw"]["calibrated"]
    assert "test_accuracy" in zero["best_calibrated"] and "test_accuracy" in zero["best_raw"]
    assert len(zero["description_prototypes"]) == len(Z.DEFAULT_DESCRIPTIONS) * len(Z.EMBEDDING_VARIANTS)


# --------------------------------------------------------------------------- #
# The CLI: `zeroshot` and `fewshot`, and their one-line errors
# --------------------------------------------------------------------------- #

@pytest.fixture(scope="module")
def lm_checkpoint(tmp_path_factory):
    from numpy_transformer import checkpoint
    path = tmp_path_factory.mktemp("lm") / "lm.npz"
    checkpoint.save(path, tiny_lm(np.float32), tokenizer=TOK.to_dict())
    return path


@pytest.fixture(scope="module")
def classifier_checkpoint(tmp_path_factory):
    from numpy_transformer import checkpoint
    path = tmp_path_factory.mktemp("clf") / "clf.npz"
    checkpoint.save(path, TransformerClassifier(TOK.vocab_size, 2, d_model=8, n_heads=2, n_layers=1, d_ff=8),
                    tokenizer=TOK.to_dict())
    return path


def test_cli_zeroshot_scores_the_texts_given(lm_checkpoint, capsys):
    from numpy_transformer.cli import main
    assert main(["zeroshot", str(lm_checkpoint), "这本书很好看", "太差了"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0].startswith("template") and len(lines) == 4
    raw, cal, label, text = lines[2].split("\t")
    assert 0 <= float(raw) <= 1 and 0 <= float(cal) <= 1 and label in ("positive", "negative")


@pytest.mark.parametrize("argv, needle", [
    (["zeroshot", "{missing}"], "does not exist"),
    (["zeroshot", "{clf}", "好"], "needs a pre-trained language model"),
    (["zeroshot", "{lm}", "好", "--template", "总之很"], "--template"),
    (["zeroshot", "{lm}", "好", "--template", "{text}总之很棒"], "--template"),
    (["zeroshot", "{lm}", "好", "--words", "差", "棒"], "--words"),
    (["zeroshot", "{lm}", "好", "--words", "差", ","], "--words"),
    (["zeroshot", "{lm}", "  "], "text 1 is empty"),
    (["fewshot", "{lm}", "--ks", "1,two"], "--ks"),
    (["fewshot", "{lm}", "--ks", "0,1"], "--ks"),
    (["fewshot", "{lm}", "--draws", "0"], "--draws"),
    (["fewshot", "{lm}", "--finetune-lrs", "1e-4,fast"], "--finetune-lrs"),
    (["fewshot", "{lm}", "--out", "{tmp}/results.txt"], "--out"),
    (["fewshot", "{lm}", "--out", "{tmp}"], "--out"),
    (["fewshot", "{lm}", "--out", "{tmp}/r.json", "--save-embeddings", "{tmp}/e.txt"], "--save-embeddings"),
    (["fewshot", "{lm}", "--ks", "1,5000", "--out", "{tmp}/r.json"], "--ks: k=5000"),
])
def test_cli_errors_are_one_line(argv, needle, lm_checkpoint, classifier_checkpoint, tmp_path, capsys):
    from numpy_transformer.cli import main
    fill = {"{lm}": str(lm_checkpoint), "{clf}": str(classifier_checkpoint),
            "{missing}": str(tmp_path / "nope.npz"), "{tmp}": str(tmp_path)}
    argv = [fill.get(a, a) for a in argv]
    argv = [a.replace("{tmp}", str(tmp_path)) for a in argv]
    assert main(argv) == 2
    captured = capsys.readouterr()
    err = captured.err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and needle in err[0], captured.err
    assert not list(tmp_path.glob("r*.json")), "nothing half-written"


# --------------------------------------------------------------------------- #
# The two figures of notebook 13
# --------------------------------------------------------------------------- #

def test_the_figures_draw_from_a_results_dict(tmp_path):
    import matplotlib.pyplot as plt

    from numpy_transformer import viz
    few = {"ks": [1, 2], "n_test": 10, "finetune": {"n_test": 5},
           "accuracy": {"proto_cosine": {"1": [0.5, 0.6], "2": [0.7, 0.7]},
                        "tfidf_lr": {"1": [0.5, 0.5], "2": [0.55, 0.6]},
                        "finetune": {"2": [0.8]}, "proto_cosine_subset": {"2": [0.6]}}}
    fig = viz.few_shot_curves(few, {"zero-shot": 0.65}, path=tmp_path / "curves.png")
    assert (tmp_path / "curves.png").stat().st_size > 1000
    line = fig.axes[0].lines[0]
    np.testing.assert_allclose(line.get_ydata(), [0.55, 0.7])          # the mean over draws
    plt.close(fig)
    rows = [{"name": "…很[差/好]", "calibrated": c, "valid_accuracy": a} for c, a in ((False, 0.6), (True, 0.7))]
    fig = viz.calibration_bars(rows, path=tmp_path / "bars.png")
    widths = sorted(p.get_width() for p in fig.axes[0].patches)
    np.testing.assert_allclose(widths, [0.6, 0.7])
    plt.close(fig)
    with pytest.raises(ValueError, match="rows"):
        viz.calibration_bars(rows[:1])
