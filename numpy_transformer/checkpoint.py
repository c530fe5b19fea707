"""Saving and loading a model (and its optimizer, schedule, tokenizer) in one ``.npz`` file.

A checkpoint is a plain NumPy ``.npz`` archive (a zip of ``.npy`` files) with:

* ``model/<name>``: one array per parameter, named as in ``model.state_dict()``;
* ``optim/<key>``: the optimizer's buffers (``optim/m.3`` is Adam's first
  moment of parameter 3), if an optimizer was saved;
* ``header``: one JSON document, stored as UTF-8 bytes in a ``uint8`` array,
  holding ``format`` ("numpy_transformer.checkpoint"), ``version`` (1), the
  model's class name and config, the shape and dtype of every array, the
  optimizer's class, hyper-parameters and step count, the schedule position,
  the tokenizer and a free ``extra`` dict (epoch, metrics ...).

Three promises:

1. **No pickle.** Files are read with ``np.load(path, allow_pickle=False)``:
   unpickling can run arbitrary code, and a checkpoint is something people
   download. Everything that is not an array is JSON.
2. **No half-written files.** ``save`` writes to a temporary file in the same
   folder, flushes it to disk, then renames it over ``path`` with
   ``os.replace`` (atomic on POSIX and Windows). A crash or a full disk leaves
   either the old checkpoint or the new one, never a mixture.
3. **CPU arrays.** Arrays are copied to the host before saving, so a
   checkpoint written on a GPU loads on a laptop. ``load`` returns a model on
   the CPU; call ``.to("gpu")`` yourself.

Every problem when loading raises one `CheckpointError` (a ValueError) whose
message names the file and says what is wrong, rather than a traceback from
inside NumPy's zip reader.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .backend import to_numpy

__all__ = ["CheckpointError", "Checkpoint", "save", "load", "load_state_into", "remove_stale_temporaries",
           "file_md5", "FORMAT", "VERSION"]

FORMAT = "numpy_transformer.checkpoint"
VERSION = 1  # bump when the layout changes; `load` refuses files newer than this

_HEADER_KEY = "header"
_MODEL_PREFIX = "model/"
_OPTIM_PREFIX = "optim/"
_ZIP_SIGNATURE = b"PK\x03\x04"  # every .npz starts with it: it is a zip archive


class CheckpointError(ValueError):
    """A file that cannot be loaded as a checkpoint; the message says which file and why."""


def file_md5(path) -> str:
    """The md5 of a file's bytes: how a checkpoint records which file its initial weights came from."""
    return hashlib.md5(Path(path).read_bytes()).hexdigest()

@dataclass
class Checkpoint:
    """What `load` returns.

    Attributes:
        model: the model rebuilt from its config with the saved weights, on the CPU,
            in the dtype it was saved in.
        optimizer_state: for ``optimizer.load_state_dict``; None if no optimizer was saved.
        extra: the free-form JSON dict given to `save` (``{}`` if none).
        tokenizer: the tokenizer's ``to_dict()`` (rebuild with ``CharTokenizer.from_dict``), or None.
        scheduler_state: for ``LRScheduler.load_state_dict``, or None.
        header: the whole JSON header (class, config, shapes, dtypes, version).
    """

    model: object
    optimizer_state: dict | None
    extra: dict
    tokenizer: dict | None
    scheduler_state: dict | None = None
    header: dict = field(default_factory=dict, repr=False)


# --------------------------------------------------------------------------- #
# Saving
# --------------------------------------------------------------------------- #

def _json_default(value):
    """Let NumPy scalars (a loss computed by NumPy, say) into the JSON header as Python numbers."""
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"{type(value).__name__} is not JSON-serialisable")


def _check_json(name: str, value):
    """Fail at save time, naming the argument, if ``value`` cannot go into the JSON header."""
    try:
        json.dumps(value, default=_json_default)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"{name}: expected JSON-serialisable data (dicts, lists, str, numbers, bool, None), "
                        f"got {exc}") from None


def _array_record(a: np.ndarray) -> dict:
    return {"shape": list(a.shape), "dtype": str(a.dtype)}


def _library_version() -> str | None:
    """The installed numpy_transformer version, recorded for whoever debugs an old file (None if not installed)."""
    from importlib import metadata
    try:
        return metadata.version("numpy_transformer")
    except metadata.PackageNotFoundError:
        return None


def _file_mode() -> int:
    """Permissions a newly created file would get (mkstemp makes 0600 files; we want the usual 0666 & ~umask)."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def _fsync_directory(folder: Path) -> None:
    """Make the rename itself durable. Not possible on every OS (Windows), where it is skipped."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def save(path, model, optimizer=None, extra: dict | None = None, tokenizer=None, scheduler=None) -> Path:
    """Write ``model`` (and optionally optimizer, schedule, tokenizer, extra) to one ``.npz`` file.

    Args:
        path: str or Path, used as given (no ``.npz`` is appended); missing
            parent folders are created; an existing file is replaced atomically.
        model: a Module. To be rebuilt by `load` it needs a ``config``
            property (a JSON-able dict) and a ``from_config`` classmethod, as
            ``TransformerClassifier`` and ``TransformerLM`` have; without them
            the weights are still saved and `load_state_into` can read them.
        optimizer: an `Optimizer` (its ``state_dict()`` is saved), or None.
        extra: a JSON-able dict (epoch, best validation loss, ...). It comes
            back through JSON: tuples return as lists, dict keys as strings.
        tokenizer: an object with ``to_dict()`` (``CharTokenizer``), a dict, or None.
        scheduler: an `LRScheduler` (its ``state_dict()`` is saved), or None.

    Returns:
        The path written, as a Path.
    """
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"path: expected a str or Path, got {type(path).__name__}")
    path = Path(path)
    if not hasattr(model, "state_dict"):
        raise TypeError(f"model: expected a Module, got {type(model).__name__}")
    if extra is None:
        extra = {}
    if not isinstance(extra, Mapping):
        raise TypeError(f"extra: expected a dict or None, got {type(extra).__name__}")
    extra = dict(extra)
    _check_json("extra", extra)

    # Gather everything and check it can be written before touching the disk.
    arrays = {}
    model_records = {}
    for name, a in model.state_dict().items():
        a = to_numpy(a)
        arrays[_MODEL_PREFIX + name] = a
        model_records[name] = _array_record(a)
    config = getattr(model, "config", None)
    if config is not None:
        if not isinstance(config, Mapping):
            raise TypeError(f"model.config: expected a dict, got {type(config).__name__}")
        config = dict(config)
        _check_json("model.config", config)

    optimizer_header = None
    if optimizer is not None:
        if not hasattr(optimizer, "state_dict"):
            raise TypeError(f"optimizer: expected an Optimizer or None, got {type(optimizer).__name__}")
        values, records = {}, {}
        for key, value in optimizer.state_dict().items():
            if hasattr(value, "shape") and hasattr(value, "dtype"):
                value = to_numpy(value)
                arrays[_OPTIM_PREFIX + key] = value
                records[key] = _array_record(value)
            else:
                values[key] = value
        _check_json("optimizer.state_dict()", values)
        optimizer_header = {"class": type(optimizer).__name__, "state": values, "arrays": records}

    scheduler_state = None
    if scheduler is not None:
        if not hasattr(scheduler, "state_dict"):
            raise TypeError(f"scheduler: expected an LRScheduler or None, got {type(scheduler).__name__}")
        scheduler_state = scheduler.state_dict()
        _check_json("scheduler.state_dict()", scheduler_state)

    tokenizer_dict = None
    if tokenizer is not None:
        if isinstance(tokenizer, Mapping):
            tokenizer_dict = dict(tokenizer)
        elif hasattr(tokenizer, "to_dict"):
            tokenizer_dict = tokenizer.to_dict()
        else:
            raise TypeError(f"tokenizer: expected an object with to_dict(), a dict or None, "
                            f"got {type(tokenizer).__name__}")
        _check_json("tokenizer", tokenizer_dict)

    for key, a in arrays.items():
        if a.dtype.hasobject:
            raise TypeError(f"{key}: expected a numeric array, got dtype {a.dtype} (it would need pickle)")

    header = {
        "format": FORMAT,
        "version": VERSION,
        "library_version": _library_version(),
        "model": {"class": type(model).__name__, "config": config, "arrays": model_records},
        "optimizer": optimizer_header,
        "scheduler": scheduler_state,
        "extra": extra,
        "tokenizer": tokenizer_dict,
    }
    text = json.dumps(header, ensure_ascii=False, default=_json_default)
    arrays[_HEADER_KEY] = np.frombuffer(text.encode("utf-8"), dtype=np.uint8)

    # Write to a temporary file beside the target, then rename it over the target.
    # Its name carries our process id, so that the next save can tell a file a
    # killed process left behind (removed) from one being written now (kept).
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(path.parent, name=path.name)
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.{os.getpid()}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **arrays)
            f.flush()
            os.fsync(f.fileno())  # the bytes are on disk before the rename makes them visible
        os.chmod(tmp_name, _file_mode())
        os.replace(tmp_name, path)
    except BaseException:  # KeyboardInterrupt too: never leave the temporary file behind
        try:
            os.unlink(tmp_name)
        except FileNotFoundError:
            pass
        raise
    _fsync_directory(path.parent)
    return path


def _process_is_gone(pid: int) -> bool:
    """True when no process ``pid`` runs (on POSIX; elsewhere we cannot ask cheaply, and say False)."""
    if os.name != "posix":
        return False
    try:
        os.kill(pid, 0)  # signal 0: only asks whether the process exists
    except ProcessLookupError:
        return True
    except OSError:
        return False
    return False


def remove_stale_temporaries(folder, name: str | None = None) -> list[Path]:
    """Delete partial files a killed `save` left in ``folder`` (for target ``name``, or any); return them.

    `save` writes ``.NAME.PID.xxxx.tmp`` then renames it. A file whose
    process is gone is removed, as is one without a process id (older
    versions wrote ``.NAME.xxxx.tmp``) once it is more than an hour old; a
    file whose process still runs is being written and is left alone.
    """
    import time

    folder = Path(folder)
    if not folder.is_dir():
        return []
    removed = []
    for tmp in folder.glob(f".{name}.*.tmp" if name else ".*.tmp"):
        if not tmp.name.startswith(".") or tmp.name.startswith(".write-probe."):
            continue
        parts = tmp.name.split(".")             # ['', *NAME, PID, random, 'tmp']
        pid = parts[-3] if len(parts) >= 5 else ""
        try:
            if pid.isdigit():
                stale = int(pid) != os.getpid() and _process_is_gone(int(pid))
            else:
                stale = time.time() - tmp.stat().st_mtime > 3600
            if stale:
                tmp.unlink()
                removed.append(tmp)
        except OSError:
            continue
    return removed


# --------------------------------------------------------------------------- #
# Reading and checking
# --------------------------------------------------------------------------- #

def _read(path) -> tuple[Path, dict, dict]:
    """Open, read and check a checkpoint: (path, header, arrays by name), or one CheckpointError."""
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"path: expected a str or Path, got {type(path).__name__}")
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"{path}: no such file")
    if path.is_dir():
        raise CheckpointError(f"{path}: is a folder, expected a checkpoint file")

    # An .npz is a zip archive. Checking its first bytes ourselves gives a clear
    # message for any other file; np.load would try to unpickle it instead.
    with open(path, "rb") as f:
        signature = f.read(len(_ZIP_SIGNATURE))
    if not signature:
        raise CheckpointError(f"{path}: is empty, expected a checkpoint (.npz) file")
    if signature != _ZIP_SIGNATURE:
        raise CheckpointError(f"{path}: not a checkpoint: expected an .npz file (a zip archive, starting with "
                              f"{_ZIP_SIGNATURE!r}), got a file starting with {signature!r}")

    arrays = {}
    try:
        with np.load(path, allow_pickle=False) as npz:
            for name in npz.files:
                try:
                    arrays[name] = npz[name]
                except ValueError as exc:
                    if "pickle" in str(exc):
                        raise CheckpointError(
                            f"{path}: refused: needs pickle: array {name!r} is an object array, and loading it "
                            f"would unpickle data, which can run arbitrary code; checkpoints hold numeric "
                            f"arrays only") from None
                    raise CheckpointError(f"{path}: array {name!r} is corrupted ({exc})") from None
    except CheckpointError:
        raise
    except (zipfile.BadZipFile, zipfile.LargeZipFile, ValueError, OSError, EOFError, KeyError) as exc:
        # A zip that cannot be read to the end: an interrupted copy or download, usually.
        raise CheckpointError(f"{path}: truncated or corrupted, cannot read it as an .npz archive "
                              f"({type(exc).__name__}: {exc}); was the copy or download interrupted?") from None

    if _HEADER_KEY not in arrays:
        names = sorted(arrays)
        shown = ", ".join(names[:5]) + (", ..." if len(names) > 5 else "")
        raise CheckpointError(f"{path}: not a numpy_transformer checkpoint: an .npz without a {_HEADER_KEY!r} "
                              f"entry (it holds: {shown or 'nothing'})")
    header = _parse_header(path, arrays.pop(_HEADER_KEY))
    _check_arrays_against_header(path, header, arrays)
    return path, header, arrays


def _parse_header(path: Path, raw: np.ndarray) -> dict:
    """Decode the JSON header and check format and version."""
    if raw.dtype != np.uint8 or raw.ndim != 1:
        raise CheckpointError(f"{path}: not a numpy_transformer checkpoint: expected {_HEADER_KEY!r} to be "
                              f"UTF-8 bytes (1-D uint8), got dtype {raw.dtype} with shape {raw.shape}")
    try:
        header = json.loads(raw.tobytes().decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{path}: not a numpy_transformer checkpoint: its header is not UTF-8 JSON "
                              f"({exc})") from None
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        got = header.get("format") if isinstance(header, dict) else type(header).__name__
        raise CheckpointError(f"{path}: not a numpy_transformer checkpoint: expected header format {FORMAT!r}, "
                              f"got {got!r}")
    version = header.get("version")
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise CheckpointError(f"{path}: expected a checkpoint format version (an integer >= 1), got {version!r}")
    if version > VERSION:
        raise CheckpointError(f"{path}: written by a newer numpy_transformer (checkpoint format version "
                              f"{version}); this one reads versions up to {VERSION}. Upgrade numpy_transformer "
                              f"to load it.")
    model = header.get("model")
    if not (isinstance(model, dict) and isinstance(model.get("class"), str)
            and isinstance(model.get("arrays"), dict) and (model.get("config") is None
                                                           or isinstance(model.get("config"), dict))):
        raise CheckpointError(f"{path}: header field 'model' is malformed: expected "
                              f"{{'class': str, 'config': dict or null, 'arrays': dict}}, got {model!r:.200}")
    optimizer = header.get("optimizer")
    if optimizer is not None and not (isinstance(optimizer, dict) and isinstance(optimizer.get("state"), dict)
                                      and isinstance(optimizer.get("arrays"), dict)):
        raise CheckpointError(f"{path}: header field 'optimizer' is malformed: expected "
                              f"{{'class': str, 'state': dict, 'arrays': dict}} or null, got {optimizer!r:.200}")
    if not isinstance(header.get("extra", {}), dict):
        raise CheckpointError(f"{path}: header field 'extra' is malformed: expected a dict, "
                              f"got {type(header['extra']).__name__}")
    return header


def _check_arrays_against_header(path: Path, header: dict, arrays: dict) -> None:
    """Every array the header lists is there with its recorded shape and dtype, and nothing else is."""
    recorded = {_MODEL_PREFIX + k: r for k, r in header["model"]["arrays"].items()}
    if header.get("optimizer") is not None:
        recorded.update({_OPTIM_PREFIX + k: r for k, r in header["optimizer"]["arrays"].items()})
    problems = []
    missing = [k for k in recorded if k not in arrays]
    unexpected = [k for k in arrays if k not in recorded]
    if missing:
        problems.append(f"arrays listed in the header but missing: {missing}")
    if unexpected:
        problems.append(f"arrays not listed in the header: {unexpected}")
    for key, record in recorded.items():
        if key not in arrays:
            continue
        a = arrays[key]
        expected = (tuple(record.get("shape", ())), record.get("dtype"))
        if (tuple(a.shape), str(a.dtype)) != expected:
            problems.append(f"{key}: expected shape {expected[0]} and dtype {expected[1]} (from the header), "
                            f"got shape {tuple(a.shape)} and dtype {a.dtype}")
    if problems:
        raise CheckpointError(f"{path}: the arrays do not match the header - " + " | ".join(problems))


def _check_against_model(path: Path, header: dict, arrays: dict, model, strict: bool) -> dict:
    """The saved weights as a state dict for ``model``, after checking names, shapes and dtypes."""
    state = {k[len(_MODEL_PREFIX):]: a for k, a in arrays.items() if k.startswith(_MODEL_PREFIX)}
    own = dict(model.named_parameters())
    problems = []
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    if strict and missing:
        problems.append(f"missing in the file: {missing}")
    if strict and unexpected:
        problems.append(f"not in the model: {unexpected}")
    for name, p in own.items():
        if name not in state:
            continue
        a = state[name]
        if tuple(a.shape) != tuple(p.shape):
            problems.append(f"{name}: expected shape {tuple(p.shape)}, got {tuple(a.shape)}")
        elif a.dtype != p.dtype:
            problems.append(f"{name}: expected dtype {p.dtype}, got {a.dtype} (cast the model with "
                            f"model.to(dtype=np.{a.dtype}) first)")
    if problems:
        saved_class = header["model"]["class"]
        note = (f" (the file holds a {saved_class}, the model is a {type(model).__name__})"
                if saved_class != type(model).__name__ else "")
        raise CheckpointError(f"{path}: the weights do not fit the model{note} - " + " | ".join(problems))
    return {k: a for k, a in state.items() if k in own}


# Model classes of the later chapters (transfer.py, mlm.py ...) that `load` rebuilds too. A chapter
# module adds its classes with `register_model` when it is imported, so this layer never imports upward.
_REGISTERED_MODELS: dict = {}


def register_model(cls):
    """Let `load` rebuild checkpoints of ``cls`` (a class with ``from_config``); returns ``cls``."""
    if not hasattr(cls, "from_config"):
        raise TypeError(f"cls: expected a model class with from_config, got {cls!r}")
    _REGISTERED_MODELS[cls.__name__] = cls
    return cls


def _default_registry() -> dict:
    """Class name -> class for the models this package defines (and those registered by chapter modules)."""
    # Imported here so that reading a checkpoint's arrays never needs the model code.
    from . import models
    registry = {name: getattr(models, name) for name in ("TransformerClassifier", "TransformerLM")
                if hasattr(models, name)}
    registry.update(_REGISTERED_MODELS)
    return registry


# --------------------------------------------------------------------------- #
# Loading
# --------------------------------------------------------------------------- #

def load(path, model_registry: Mapping | None = None) -> Checkpoint:
    """Read a checkpoint written by `save` and rebuild its model.

    Args:
        path: str or Path.
        model_registry: class name -> class with ``from_config``; by default
            ``TransformerClassifier`` and ``TransformerLM`` from
            ``numpy_transformer.models``. Pass your own to load other models.

    Returns:
        A `Checkpoint`; its model is on the CPU, in the dtype it was saved in.

    Raises:
        CheckpointError naming the file and the problem: no such file, not an
        .npz, truncated, not ours, a newer format version, an object array that
        would need pickle, or weights that do not fit the model the config builds.
    """
    path, header, arrays = _read(path)
    class_name = header["model"]["class"]
    config = header["model"]["config"]
    if config is None:
        raise CheckpointError(f"{path}: the model ({class_name}) was saved without a config, so it cannot be "
                              f"rebuilt; build it yourself and use load_state_into(path, model)")
    registry = _default_registry() if model_registry is None else dict(model_registry)
    if class_name not in registry:
        raise CheckpointError(f"{path}: expected a model class in {sorted(registry)}, got {class_name!r}; "
                              f"pass model_registry={{{class_name!r}: {class_name}}}")
    try:
        model = registry[class_name].from_config(config)
    except Exception as exc:
        raise CheckpointError(f"{path}: {class_name}.from_config could not rebuild the model from the saved "
                              f"config ({type(exc).__name__}: {exc})") from exc

    # The config builds the model in its default dtype; a float64 model (for
    # gradient checks, say) is cast back to what was saved.
    saved_dtypes = {r["dtype"] for r in header["model"]["arrays"].values()}
    if len(saved_dtypes) == 1:
        (dtype,) = saved_dtypes
        if any(str(p.dtype) != dtype for p in model.parameters()):
            model.to(dtype=np.dtype(dtype))
    model.load_state_dict(_check_against_model(path, header, arrays, model, strict=True))

    optimizer_state = None
    if header.get("optimizer") is not None:
        optimizer_state = dict(header["optimizer"]["state"])
        optimizer_state.update({k[len(_OPTIM_PREFIX):]: a for k, a in arrays.items() if k.startswith(_OPTIM_PREFIX)})
    return Checkpoint(model=model, optimizer_state=optimizer_state, extra=header.get("extra") or {},
                      tokenizer=header.get("tokenizer"), scheduler_state=header.get("scheduler"), header=header)


def load_state_into(path, model, strict: bool = True):
    """Copy a checkpoint's weights into an existing ``model`` (on any device); return the model.

    The same checks as `load`, against ``model`` instead of a rebuilt one:
    every name, shape and dtype must match, and a CheckpointError names each
    key that does not. ``strict=False`` allows missing and extra names (e.g.
    a pre-trained encoder loaded into a classifier whose head is new); shapes
    and dtypes of the shared names must still match.
    """
    path, header, arrays = _read(path)
    model.load_state_dict(_check_against_model(path, header, arrays, model, strict=strict), strict=strict)
    return model
