"""Checkpoints: exact round trips, atomic writes, and one clear CheckpointError per kind of bad file."""

import json
import os

import numpy as np
import pytest

from numpy_transformer import checkpoint
from numpy_transformer.checkpoint import Checkpoint, CheckpointError, load, load_state_into, save
from numpy_transformer.nn import Module, Parameter
from numpy_transformer.optim import SGD, AdamW, LRScheduler, warmup_cosine


class Tiny(Module):
    """Two parameters and a config, like the real models: enough to test checkpoints on."""

    def __init__(self, d_in=3, d_out=2, seed=0):
        super().__init__()
        rng = np.random.default_rng(seed)
        self.d_in, self.d_out, self.seed = d_in, d_out, seed
        self.W = Parameter(rng.standard_normal((d_in, d_out)).astype(np.float32))
        self.b = Parameter(rng.standard_normal(d_out).astype(np.float32), decay=False)

    @property
    def config(self):
        return {"d_in": self.d_in, "d_out": self.d_out, "seed": self.seed}

    @classmethod
    def from_config(cls, config):
        return cls(**config)


class NoConfig(Module):
    def __init__(self):
        super().__init__()
        self.W = Parameter(np.ones((3, 2), dtype=np.float32))
        self.b = Parameter(np.zeros(2, dtype=np.float32))


REGISTRY = {"Tiny": Tiny}


class FakeTokenizer:
    def to_dict(self):
        return {"format": "char", "chars": ["这", "是", "文", "章"]}


def trained(seed=1, steps=3):
    """A Tiny model, an AdamW and a schedule after a few steps with fixed gradients."""
    model = Tiny(seed=seed)
    opt = AdamW(model.parameters(), lr=0.01)
    sched = LRScheduler(opt, warmup_cosine, base_lr=0.01, warmup=2, total=10)
    rng = np.random.default_rng(seed)
    for _ in range(steps):
        for p in model.parameters():
            p.grad[...] = rng.standard_normal(p.shape)
        opt.step()
        sched.step()
    return model, opt, sched


@pytest.fixture
def saved(tmp_path):
    model, opt, sched = trained()
    path = tmp_path / "model.npz"
    save(path, model, opt, extra={"epoch": 3}, tokenizer=FakeTokenizer(), scheduler=sched)
    return path


def assert_one_clear_error(info):
    """The error reads as one message: no chained traceback from inside NumPy or zipfile."""
    err = info.value
    assert isinstance(err, ValueError)
    assert err.__cause__ is None and (err.__context__ is None or err.__suppress_context__)


# --------------------------------------------------------------------------- #
# Round trips
# --------------------------------------------------------------------------- #

def test_round_trip_is_exact(tmp_path):
    model, opt, sched = trained()
    extra = {"epoch": 3, "val_loss": 0.1234567890123, "history": [1.0, 0.5, 0.25], "note": "中文 ok",
             "best": {"step": 30, "acc": np.float32(0.75)}}
    path = save(str(tmp_path / "run" / "ck.npz"), model, opt, extra=extra, tokenizer=FakeTokenizer(),
                scheduler=sched)
    assert path == tmp_path / "run" / "ck.npz"

    ckpt = load(path, model_registry=REGISTRY)
    assert isinstance(ckpt, Checkpoint)
    assert type(ckpt.model) is Tiny and ckpt.model.config == model.config
    for (name, a), (name2, b) in zip(model.named_parameters(), ckpt.model.named_parameters()):
        assert name == name2
        assert b.data.dtype == a.data.dtype
        np.testing.assert_array_equal(a.data, b.data)

    original = opt.state_dict()
    assert ckpt.optimizer_state.keys() == original.keys()
    for key, value in original.items():
        if isinstance(value, np.ndarray):
            assert ckpt.optimizer_state[key].dtype == value.dtype
            np.testing.assert_array_equal(ckpt.optimizer_state[key], value)
        else:
            assert ckpt.optimizer_state[key] == value
    assert ckpt.extra == {**extra, "best": {"step": 30, "acc": 0.75}}  # NumPy scalars come back as Python numbers
    assert ckpt.tokenizer == FakeTokenizer().to_dict()
    assert ckpt.scheduler_state == sched.state_dict()
    assert ckpt.header["format"] == "numpy_transformer.checkpoint" and ckpt.header["version"] == 1
    assert ckpt.header["model"]["class"] == "Tiny"


def test_training_resumed_from_a_checkpoint_matches_training_straight_through(tmp_path):
    straight, opt, sched = trained(steps=5)

    model, opt, sched = trained(steps=3)
    save(tmp_path / "ck.npz", model, opt, scheduler=sched)
    ckpt = load(tmp_path / "ck.npz", model_registry=REGISTRY)
    opt2 = AdamW(ckpt.model.parameters(), lr=0.01)
    sched2 = LRScheduler(opt2, warmup_cosine, base_lr=0.01, warmup=2, total=10)
    opt2.load_state_dict(ckpt.optimizer_state)
    sched2.load_state_dict(ckpt.scheduler_state)
    rng = np.random.default_rng(1)
    for step in range(5):  # the same gradient stream as trained(): skip the first 3 steps
        grads = [rng.standard_normal(p.shape) for p in ckpt.model.parameters()]
        if step < 3:
            continue
        for p, g in zip(ckpt.model.parameters(), grads):
            p.grad[...] = g
        opt2.step()
        sched2.step()
    for a, b in zip(straight.parameters(), ckpt.model.parameters()):
        np.testing.assert_array_equal(a.data, b.data)


def test_model_only_and_float64_model(tmp_path):
    model = Tiny(seed=4).to(dtype=np.float64)  # from_config builds float32; load must cast back
    save(tmp_path / "m.npz", model)
    ckpt = load(tmp_path / "m.npz", model_registry=REGISTRY)
    assert ckpt.optimizer_state is None and ckpt.tokenizer is None and ckpt.extra == {}
    assert all(p.dtype == np.float64 for p in ckpt.model.parameters())
    for a, b in zip(model.parameters(), ckpt.model.parameters()):
        np.testing.assert_array_equal(a.data, b.data)


def test_saved_from_device_arrays_loads_as_numpy(tmp_path, strict):
    model, opt, _ = trained()
    for p in model.parameters():  # as if on the GPU
        p.data, p.grad = strict.asarray(p.data), strict.asarray(p.grad)
    opt.state = [{k: strict.asarray(v) for k, v in s.items()} for s in opt.state]
    save(tmp_path / "gpu.npz", model, opt)
    ckpt = load(tmp_path / "gpu.npz", model_registry=REGISTRY)
    for a, b in zip(model.parameters(), ckpt.model.parameters()):
        assert type(b.data) is np.ndarray
        np.testing.assert_array_equal(a.data.get(), b.data)
    assert all(type(v) is np.ndarray for k, v in ckpt.optimizer_state.items() if "." in k)
    load_state_into(tmp_path / "gpu.npz", model)  # and back into the device model
    assert all(isinstance(p.data, strict.ndarray) for p in model.parameters())


def test_file_is_a_plain_npz_without_pickle(saved):
    with np.load(saved, allow_pickle=False) as npz:
        names = set(npz.files)
        assert names == {"header", "model/W", "model/b", "optim/m.0", "optim/m.1", "optim/v.0", "optim/v.1"}
        header = json.loads(npz["header"].tobytes().decode("utf-8"))
    assert header["optimizer"]["class"] == "AdamW"
    assert header["optimizer"]["state"]["betas"] == [0.9, 0.999]
    assert header["model"]["arrays"]["W"] == {"shape": [3, 2], "dtype": "float32"}


def test_save_refuses_what_json_cannot_hold(tmp_path):
    with pytest.raises(TypeError, match="extra: expected JSON-serialisable"):
        save(tmp_path / "x.npz", Tiny(), extra={"weights": np.zeros(3)})
    with pytest.raises(TypeError, match="extra: expected a dict"):
        save(tmp_path / "x.npz", Tiny(), extra=[1, 2])
    with pytest.raises(TypeError, match="path: expected a str or Path"):
        save(3, Tiny())
    assert list(tmp_path.iterdir()) == []


# --------------------------------------------------------------------------- #
# Atomic writes
# --------------------------------------------------------------------------- #

def failing_savez(file, **arrays):
    """np.savez that dies half-way through writing, like a full disk."""
    file.write(b"PK\x03\x04 half a zip archive")
    raise OSError("No space left on device")


def test_a_failed_save_leaves_no_file_and_no_temporary(tmp_path, monkeypatch):
    monkeypatch.setattr(np, "savez", failing_savez)
    with pytest.raises(OSError, match="No space left"):
        save(tmp_path / "ck.npz", Tiny())
    assert list(tmp_path.iterdir()) == []


def test_a_failed_save_keeps_the_previous_checkpoint(saved, monkeypatch):
    before = saved.read_bytes()
    monkeypatch.setattr(np, "savez", failing_savez)
    with pytest.raises(OSError):
        save(saved, Tiny(seed=9))
    assert saved.read_bytes() == before
    assert list(saved.parent.iterdir()) == [saved]
    load(saved, model_registry=REGISTRY)


def test_an_interrupt_also_cleans_up(tmp_path, monkeypatch):
    def interrupted(file, **arrays):
        file.write(b"PK")
        raise KeyboardInterrupt

    monkeypatch.setattr(np, "savez", interrupted)
    with pytest.raises(KeyboardInterrupt):
        save(tmp_path / "ck.npz", Tiny())
    assert list(tmp_path.iterdir()) == []


def test_save_replaces_an_existing_checkpoint_with_normal_permissions(saved):
    save(saved, Tiny(seed=7))
    assert load(saved, model_registry=REGISTRY).model.config["seed"] == 7
    assert list(saved.parent.iterdir()) == [saved]
    umask = os.umask(0)
    os.umask(umask)
    assert saved.stat().st_mode & 0o777 == 0o666 & ~umask


# --------------------------------------------------------------------------- #
# Bad files: one CheckpointError each, saying what is wrong
# --------------------------------------------------------------------------- #

def test_missing_file_names_the_path(tmp_path):
    with pytest.raises(CheckpointError, match=r"nope\.npz: no such file") as info:
        load(tmp_path / "nope.npz", model_registry=REGISTRY)
    assert_one_clear_error(info)
    with pytest.raises(CheckpointError, match="is a folder"):
        load(tmp_path)


def test_truncated_file(saved, tmp_path):
    data = saved.read_bytes()
    bad = tmp_path / "truncated.npz"
    bad.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match=r"truncated\.npz: truncated or corrupted") as info:
        load(bad, model_registry=REGISTRY)
    assert_one_clear_error(info)


def test_random_bytes_and_empty_file(tmp_path):
    bad = tmp_path / "noise.npz"
    bad.write_bytes(b"\x00\x01" + np.random.default_rng(0).bytes(1000))
    with pytest.raises(CheckpointError, match="not a checkpoint: expected an .npz file") as info:
        load(bad, model_registry=REGISTRY)
    assert_one_clear_error(info)
    empty = tmp_path / "empty.npz"
    empty.write_bytes(b"")
    with pytest.raises(CheckpointError, match="is empty"):
        load(empty, model_registry=REGISTRY)
    npy = tmp_path / "array.npy"
    np.save(npy, np.zeros(3))
    with pytest.raises(CheckpointError, match="not a checkpoint"):
        load(npy, model_registry=REGISTRY)


def test_plain_npz_without_header(tmp_path):
    path = tmp_path / "plain.npz"
    np.savez(path, weights=np.zeros((2, 2)), bias=np.zeros(2))
    with pytest.raises(CheckpointError, match=r"not a numpy_transformer checkpoint: an .npz without a 'header' "
                                              r"entry \(it holds: bias, weights\)") as info:
        load(path, model_registry=REGISTRY)
    assert_one_clear_error(info)


def rewrite(path, out, header_change=None, extra_arrays=None, drop=()):
    """Copy a checkpoint, editing its header and arrays, the way someone might by hand."""
    with np.load(path, allow_pickle=False) as npz:
        arrays = {k: npz[k] for k in npz.files if k not in drop}
    header = json.loads(arrays["header"].tobytes().decode("utf-8"))
    if header_change:
        header_change(header)
    arrays["header"] = np.frombuffer(json.dumps(header).encode("utf-8"), dtype=np.uint8)
    arrays.update(extra_arrays or {})
    np.savez(out, **arrays)
    return out


def test_header_of_another_format(saved, tmp_path):
    bad = rewrite(saved, tmp_path / "other.npz", lambda h: h.update(format="someone.else"))
    with pytest.raises(CheckpointError, match="expected header format 'numpy_transformer.checkpoint', "
                                              "got 'someone.else'"):
        load(bad, model_registry=REGISTRY)
    text = tmp_path / "text.npz"
    np.savez(text, header=np.frombuffer(b"\xff not json", dtype=np.uint8))
    with pytest.raises(CheckpointError, match="header is not UTF-8 JSON"):
        load(text, model_registry=REGISTRY)


def test_version_from_the_future(saved, tmp_path):
    bad = rewrite(saved, tmp_path / "future.npz", lambda h: h.update(version=2))
    with pytest.raises(CheckpointError, match=r"newer numpy_transformer \(checkpoint format version 2\); "
                                              r"this one reads versions up to 1") as info:
        load(bad, model_registry=REGISTRY)
    assert_one_clear_error(info)


UNPICKLED = []


def _record_unpickling():
    UNPICKLED.append(True)
    return "payload"


class Payload:
    """An object whose unpickling has a visible side effect: what a malicious file would do."""

    def __reduce__(self):
        return (_record_unpickling, ())


def test_object_array_is_refused_without_unpickling(saved, tmp_path):
    payload = np.array([Payload()], dtype=object)
    bad = rewrite(saved, tmp_path / "pickle.npz", extra_arrays={"model/evil": payload})
    with pytest.raises(CheckpointError, match="refused: needs pickle: array 'model/evil'") as info:
        load(bad, model_registry=REGISTRY)
    assert_one_clear_error(info)
    with pytest.raises(CheckpointError, match="refused: needs pickle"):
        load_state_into(bad, Tiny())
    assert UNPICKLED == []


def test_arrays_that_do_not_match_the_header(saved, tmp_path):
    bad = rewrite(saved, tmp_path / "extra.npz", extra_arrays={"model/surprise": np.zeros(3)})
    with pytest.raises(CheckpointError, match=r"arrays not listed in the header: \['model/surprise'\]"):
        load(bad, model_registry=REGISTRY)
    bad = rewrite(saved, tmp_path / "gone.npz", drop=("optim/v.1",))
    with pytest.raises(CheckpointError, match=r"listed in the header but missing: \['optim/v.1'\]"):
        load(bad, model_registry=REGISTRY)
    bad = rewrite(saved, tmp_path / "dtype.npz", extra_arrays={"model/W": np.zeros((3, 2), dtype=np.float64)})
    with pytest.raises(CheckpointError, match=r"model/W: expected shape \(3, 2\) and dtype float32 \(from the "
                                              r"header\), got shape \(3, 2\) and dtype float64"):
        load(bad, model_registry=REGISTRY)


def test_weights_that_do_not_fit_the_config(tmp_path):
    model = Tiny(d_out=3)
    model.d_out = 2  # the config now says 2 while the arrays have 3 columns
    save(tmp_path / "liar.npz", model)
    with pytest.raises(CheckpointError, match=r"W: expected shape \(3, 2\), got \(3, 3\) \| "
                                              r"b: expected shape \(2,\), got \(3,\)") as info:
        load(tmp_path / "liar.npz", model_registry=REGISTRY)
    assert_one_clear_error(info)


def test_unknown_class_and_missing_config(saved, tmp_path):
    with pytest.raises(CheckpointError, match=r"got 'Tiny'; pass model_registry=\{'Tiny': Tiny\}"):
        load(saved, model_registry={})
    save(tmp_path / "nc.npz", NoConfig())
    with pytest.raises(CheckpointError, match=r"saved without a config.*load_state_into"):
        load(tmp_path / "nc.npz", model_registry={"NoConfig": NoConfig})
    model = NoConfig()
    model.W.data[...] = 5.0
    load_state_into(tmp_path / "nc.npz", model)
    assert (model.W.data == 1.0).all()


# --------------------------------------------------------------------------- #
# load_state_into
# --------------------------------------------------------------------------- #

def test_load_state_into_an_existing_model(saved):
    model = Tiny(seed=123)
    assert load_state_into(saved, model) is model
    original, _, _ = trained()
    for a, b in zip(original.parameters(), model.parameters()):
        np.testing.assert_array_equal(a.data, b.data)


def test_load_state_into_names_the_key_with_the_wrong_shape(saved):
    model = Tiny(d_out=4)
    before = model.W.data.copy()
    with pytest.raises(CheckpointError, match=r"W: expected shape \(3, 4\), got \(3, 2\)") as info:
        load_state_into(saved, model)
    assert_one_clear_error(info)
    np.testing.assert_array_equal(model.W.data, before)  # nothing was loaded


def test_load_state_into_checks_names_and_dtypes(saved):
    class Renamed(Module):
        def __init__(self):
            super().__init__()
            self.w = Parameter(np.zeros((3, 2), dtype=np.float32))
            self.B = Parameter(np.zeros(2, dtype=np.float32))

    with pytest.raises(CheckpointError, match=r"\(the file holds a Tiny, the model is a Renamed\) - missing in the "
                                              r"file: \['w', 'B'\] \| not in the model: \['W', 'b'\]"):
        load_state_into(saved, Renamed())
    with pytest.raises(CheckpointError, match=r"W: expected dtype float64, got float32 \(cast the model"):
        load_state_into(saved, Tiny().to(dtype=np.float64))


def test_load_state_into_non_strict_loads_the_shared_names(saved):
    class Bigger(Tiny):
        def __init__(self):
            super().__init__()
            self.head = Parameter(np.full(5, 7.0, dtype=np.float32))

    model = Bigger()
    with pytest.raises(CheckpointError, match=r"missing in the file: \['head'\]"):
        load_state_into(saved, model)
    load_state_into(saved, model, strict=False)
    original, _, _ = trained()
    np.testing.assert_array_equal(model.W.data, original.W.data)
    assert (model.head.data == 7.0).all()


# --------------------------------------------------------------------------- #
# With the real model, where it exists
# --------------------------------------------------------------------------- #

def test_transformer_classifier_round_trip(tmp_path):
    try:
        from numpy_transformer.models import TransformerClassifier
    except ImportError as exc:
        pytest.skip(f"numpy_transformer.models is not importable yet ({exc})")
    model = TransformerClassifier(vocab_size=11, num_classes=2, d_model=8, n_heads=2, n_layers=1, d_ff=16,
                                  max_len=6, seed=3)
    opt = SGD(model.parameters(), lr=0.1, momentum=0.9)
    for p in model.parameters():
        p.grad[...] = 0.01
    opt.step()
    path = save(tmp_path / "clf.npz", model, opt, tokenizer={"chars": ["a"]})
    ckpt = load(path)  # the default registry finds TransformerClassifier
    assert type(ckpt.model) is TransformerClassifier and ckpt.model.config == model.config
    for (n1, a), (n2, b) in zip(model.named_parameters(), ckpt.model.named_parameters()):
        assert n1 == n2
        np.testing.assert_array_equal(a.data, b.data)
    ids = np.array([[1, 2, 3, 4]])
    mask = np.ones_like(ids, dtype=bool)
    model.eval()
    ckpt.model.eval()
    np.testing.assert_array_equal(model(ids, mask), ckpt.model(ids, mask))


def test_checkpoint_error_is_a_value_error():
    assert issubclass(CheckpointError, ValueError)
    assert checkpoint.VERSION == 1 and checkpoint.FORMAT == "numpy_transformer.checkpoint"
