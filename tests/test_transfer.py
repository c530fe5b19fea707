"""Transfer learning: copying a pre-trained trunk by name, mismatch errors, the fine-tuning classifier's
gradients, fine-tuning options, domain adaptation plumbing, and the domain keyword rule's counts."""

import numpy as np
import pytest

from numpy_transformer import checkpoint
from numpy_transformer.data import Dataset, load_corpus
from numpy_transformer.gradcheck import check_gradients
from numpy_transformer.mlm import TransformerMLM
from numpy_transformer.models import TransformerLM
from numpy_transformer.tokenizer import CLS_ID, EOS_ID, MASK, CharTokenizer
from numpy_transformer.transfer import (FinetuneConfig, TransferClassifier, classifier_from_pretrained,
                                        copy_pretrained, domain_of, finetune, label_subsets, split_by_domain)

TINY = dict(d_model=8, n_heads=2, n_layers=2, d_ff=16, max_len=16)
TEXTS = ["好的很好", "很差不好", "非常好", "太差了", "好好好", "差差差", "真不错", "真糟糕"]
LABELS = [1, 0, 1, 0, 1, 0, 1, 0]


def _tokenizer():
    return CharTokenizer.build(TEXTS, extra_special=(MASK,))


def _saved_lm(tmp_path, cls=TransformerLM, **kw):
    tok = _tokenizer()
    lm = cls(tok.vocab_size, **{**TINY, "dropout": 0.0, "seed": 3, **kw})
    path = tmp_path / "lm.npz"
    checkpoint.save(path, lm, tokenizer=tok, extra={"objective": "test"})
    return path, lm, tok


@pytest.mark.parametrize("cls", [TransformerLM, TransformerMLM])
def test_init_from_copies_exactly_the_trunk_and_leaves_a_fresh_head(tmp_path, cls):
    path, lm, tok = _saved_lm(tmp_path, cls)
    model, tok2, prov = classifier_from_pretrained(path, num_classes=2, seed=5)
    assert tok2 == tok
    assert model.causal == (cls is TransformerLM)
    src = dict(lm.named_parameters())
    fresh = dict(TransferClassifier.from_config(model.config).named_parameters())
    copied = set()
    for name, p in model.named_parameters():
        if name in src:
            expected = src[name].data.copy()
            if name == "embed.E" and cls is TransformerLM:      # GPT-style: [CLS] starts as the LM's [EOS]
                expected[CLS_ID] = expected[EOS_ID]
            np.testing.assert_array_equal(p.data, expected, err_msg=name)
            copied.add(name)
        else:                                   # only the head is new, and it is the fresh initialisation
            assert name.startswith("head."), name
            np.testing.assert_array_equal(p.data, fresh[name].data)
    assert copied == {n for n in src if n == "embed.E" or n.startswith(("pos.", "encoder."))}
    assert prov["copied"] == len(copied) and prov["init_class"] == cls.__name__ and len(prov["init_md5"]) == 32


@pytest.mark.parametrize("key, value, word", [("d_model", 12, "width"), ("n_layers", 3, "depth"),
                                              ("vocab_size", 99, "vocabulary")])
def test_mismatched_vocabulary_width_or_depth_is_a_clear_error(tmp_path, key, value, word):
    _, lm, tok = _saved_lm(tmp_path)
    cfg = {**TINY, key: value} if key != "vocab_size" else dict(TINY)
    vocab = value if key == "vocab_size" else tok.vocab_size
    cfg.pop("vocab_size", None)
    target = TransferClassifier(vocab, 2, **cfg)
    with pytest.raises(ValueError, match=f"{key}.*{word}"):
        copy_pretrained(lm, target)


def _model_gradcheck(model, ids, mask):
    params = dict(model.named_parameters())
    inputs = {n: p.data for n, p in params.items()}

    def backward(dout, **_):
        model.zero_grad()
        model(ids, mask)
        model.backward(dout)
        return {n: p.grad.copy() for n, p in params.items()}
    results = check_gradients(lambda **_: model(ids, mask), backward, inputs)
    for r in results.values():
        assert r.max_rel_error <= 1e-5, str(r)


@pytest.mark.parametrize("causal, pooling", [(True, "mean"), (True, "last"), (False, "mean"), (False, "cls")])
def test_transfer_classifier_gradients(causal, pooling):
    model = TransferClassifier(11, 3, **TINY, dropout=0.0, activation="gelu", dtype=np.float64, causal=causal,
                               pooling=pooling)
    ids = np.array([[2, 3, 4, 5, 6], [2, 7, 8, 0, 0]])
    _model_gradcheck(model, ids, ids != 0)


def test_causal_classifier_pooling_last_reads_the_last_real_token_and_ignores_padding():
    model = TransferClassifier(11, 2, **TINY, dropout=0.0, dtype=np.float64, causal=True, pooling="last")
    ids = np.array([[2, 3, 4, 0, 0]])
    np.testing.assert_allclose(model(ids, ids != 0), model(ids[:, :3]), atol=1e-12)
    with pytest.raises(ValueError, match="pooling"):
        TransferClassifier(11, 2, **TINY, causal=True, pooling="cls")


def _data():
    return Dataset(TEXTS, np.array(LABELS))


@pytest.mark.parametrize("options", [dict(), dict(freeze_encoder=True), dict(layer_decay=0.5),
                                     dict(unfreeze_every=2), dict(adaptation="dann"), dict(adaptation="coral"),
                                     dict(adaptation="consistency")])
def test_finetune_runs_and_trains_only_what_it_should(tmp_path, options):
    path, lm, tok = _saved_lm(tmp_path)
    model, tok, _ = classifier_from_pretrained(path, dropout=0.1)
    before = {n: p.data.copy() for n, p in model.named_parameters()}
    cfg = FinetuneConfig(steps=4, batch_size=4, lr=1e-2, warmup_steps=1, eval_every=2, max_len=16, **options)
    target = ["电脑不好", "屏幕很好"] if options.get("adaptation") else None
    hist = finetune(model, _data(), _data(), tok, cfg, target_texts=target, log=None)
    assert hist.step == [2, 4] and hist.best_step in (2, 4)
    changed = {n for n, p in model.named_parameters() if not np.array_equal(p.data, before[n])}
    if options.get("freeze_encoder"):
        assert changed == {"head.W", "head.b"}
    elif options.get("unfreeze_every"):   # 4 steps, one more group every 2: top, then the last block
        assert "embed.E" not in changed and not any(n.startswith("encoder.blocks.0.") for n in changed)
    else:
        assert "embed.E" in changed and "head.W" in changed


def test_finetune_needs_target_texts_for_adaptation():
    model = TransferClassifier(20, 2, **TINY)
    with pytest.raises(ValueError, match="target_texts"):
        finetune(model, _data(), _data(), _tokenizer(), FinetuneConfig(steps=1, adaptation="coral"), log=None)
    with pytest.raises(ValueError, match="adaptation"):
        FinetuneConfig(adaptation="magic")


def test_label_subsets_are_nested_and_sized():
    subsets = label_subsets(1000, [0.01, 0.1, 1.0], seed=0)
    assert [len(s) for s in subsets.values()] == [10, 100, 1000]
    assert set(subsets[0.01]) <= set(subsets[0.1]) <= set(subsets[1.0])


def test_domain_rule_and_its_counts_on_the_review_corpus():
    assert domain_of("酒店的房间很干净") == "hotel"
    assert domain_of("这台电脑的屏幕不错") == "laptop"
    assert domain_of("这本书的作者") == "book"
    assert domain_of("很好") is None                     # no domain
    assert domain_of("在酒店用电脑") is None             # several domains
    corpus = load_corpus()
    counts = {name: split_by_domain(split)[1] for name, split in corpus.items()}
    assert counts["train"] == {"hotel": 4217, "laptop": 2077, "book": 2353, "none": 4973, "several": 212}
    assert counts["test"] == {"hotel": 541, "laptop": 272, "book": 272, "none": 629, "several": 29}
    for split in corpus.values():
        c = split_by_domain(split)[1]
        assert sum(c.values()) == len(split)


@pytest.mark.parametrize("method", ["source", "dann", "coral", "consistency"])
def test_adapt_features_trains_every_method_on_features(method):
    from numpy_transformer.transfer import adapt_features
    rng = np.random.default_rng(0)
    xs, xt = rng.normal(size=(40, 6)), rng.normal(size=(30, 6)) + 1.0
    ys = (xs[:, 0] > 0).astype(np.int64)
    model = adapt_features(xs, ys, xt, method, steps=60, batch_size=8, lr=1e-2, seed=1)
    p = model.predict_proba(xs)
    assert p.shape == (40, 2) and np.allclose(p.sum(1), 1)
    assert (p.argmax(1) == ys).mean() > 0.8                     # it learned the source task
    again = adapt_features(xs, ys, xt, method, steps=60, batch_size=8, lr=1e-2, seed=1)
    np.testing.assert_array_equal(again.predict_proba(xt), model.predict_proba(xt))   # same seed, same bits
    with pytest.raises(ValueError, match="method"):
        adapt_features(xs, ys, xt, "magic")


def _tiny_tsv(tmp_path):
    rng = np.random.default_rng(0)
    lines = [f"{'好' * int(rng.integers(1, 4))}{'很差不错'[i % 4]}{i}\t{i % 2}" for i in range(80)]
    path = tmp_path / "tiny.tsv"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_finetune_command_writes_a_checkpoint_that_records_where_its_weights_came_from(tmp_path, capsys):
    from numpy_transformer import cli
    path, _, _ = _saved_lm(tmp_path)
    out = tmp_path / "ft"
    rc = cli.main(["finetune", "--init-from", str(path), "--data", str(_tiny_tsv(tmp_path)), "--steps", "2",
                   "--eval-every", "1", "--batch-size", "4", "--max-len", "16", "--out", str(out)])
    assert rc == 0, capsys.readouterr().err
    assert "GPT-style" in capsys.readouterr().out
    ckpt = checkpoint.load(out / "classifier.npz")          # TransferClassifier is registered for `load`
    assert ckpt.extra["init_from"] == str(path) and ckpt.extra["init_class"] == "TransformerLM"
    assert ckpt.model.causal
    capsys.readouterr()
    assert cli.main(["predict", str(out / "classifier.npz"), "很好"]) == 0      # predict opens it too
    assert "很好" in capsys.readouterr().out
    assert cli.main(["evaluate", str(out / "classifier.npz"), "--data", str(_tiny_tsv(tmp_path))]) == 0
    assert "accuracy" in capsys.readouterr().out                                # and evaluate


@pytest.mark.parametrize("command", [["predict", "{p}", "很好"], ["evaluate", "{p}"]])
def test_predict_and_evaluate_on_an_mlm_checkpoint_say_to_fine_tune_it_first(tmp_path, capsys, command):
    from numpy_transformer import cli
    path, _, _ = _saved_lm(tmp_path, cls=TransformerMLM)
    assert cli.main([a.format(p=path) for a in command]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "masked language model (TransformerMLM)" in err and "finetune" in err
    assert err.count("\n") == 1


@pytest.mark.parametrize("args, words", [
    (["--init-from", "no/such.npz"], "--init-from: no such file"),
    (["--steps", "0"], "--steps"),
    (["--layer-decay", "1.5"], "--layer-decay"),
])
def test_finetune_command_bad_input_is_one_line(tmp_path, capsys, args, words):
    from numpy_transformer import cli
    path, _, _ = _saved_lm(tmp_path)
    argv = ["finetune", "--init-from", str(path), "--out", str(tmp_path / "o"), *args]
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and words in err and err.count("\n") == 1


def test_pooled_features_are_the_eval_mode_features_in_dataset_order():
    from numpy_transformer.transfer import pooled_features
    tok = _tokenizer()
    model = TransferClassifier(tok.vocab_size, 2, **TINY, dropout=0.5, dtype=np.float64, causal=True)
    data = _data()
    feats = pooled_features(model, data, tok, max_len=16, batch_size=3)
    assert model.training                                     # the mode is restored
    model.eval()
    for i in (0, 5):
        ids, mask = tok.encode_batch([data.texts[i]], 16, add_cls=True)
        np.testing.assert_allclose(feats[i], model.features(ids, mask)[0], atol=1e-12)
