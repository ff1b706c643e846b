"""The model file: a versioned ``.npz`` holding a JSON header and the weights.

The header names the format and its version, the fastmlp version that wrote
it, the model's configuration and its free-form ``meta``; each parameter array
is stored under its name (``W1``, ``b1``, ...). Files are written atomically.

Format 2 adds what resuming needs, under the header's ``training``: the epochs
trained, the shuffling stream's state, and the optimizer's name,
hyper-parameters and step count, its state arrays stored as
``optimizer_state``. Format 1 files load without them.
"""

from __future__ import annotations

import json
import math
import os
import struct
import warnings
import zipfile
import zlib

try:
    import lzma
except ImportError:  # pragma: no cover - Python built without it
    lzma = None  # type: ignore[assignment]

import numpy as np

from . import optim
from ._util import atomic_write, integer
from ._version import __version__

#: Version of the saved-model format; ``read`` reads this version and older ones.
FORMAT_VERSION = 2
FORMAT_NAME = "fastmlp-model"


def write(path, config: dict, meta: dict, arrays: dict, training=None) -> None:
    """Write ``config``, ``meta``, the named ``arrays`` and the ``training`` state (see
    :func:`training_state`) to ``path``, atomically."""
    header = {"format": FORMAT_NAME, "format_version": FORMAT_VERSION,
              "fastmlp_version": __version__, "config": config, "meta": meta,
              "training": training}
    with atomic_write(path) as f:
        np.savez(f, __header__=np.array(json.dumps(header)), **arrays)


class _NewerFormat(Exception):
    pass


# What a damaged or crafted file can make the zip, .npy and JSON readers raise.
_UNREADABLE = (ValueError, KeyError, TypeError, OSError, EOFError, zipfile.BadZipFile,
               zlib.error, struct.error, NotImplementedError, OverflowError, RecursionError,
               *((lzma.LZMAError,) if lzma else ()))


def read(path, build):
    """Read a model file and return ``build(config, arrays, meta, training)``, where
    ``training`` is the header's training state (None in format 1) and ``arrays``
    maps names to arrays; any error ``build`` raises on bad contents (a missing
    array, a wrong shape, an unknown name) is reported as an unreadable file.

    Raises
    ------
    ValueError
        The file is truncated, is not a fastmlp model, or is from a newer format.
    FileNotFoundError
        No such file.
    """
    path = os.fspath(path)
    try:
        with np.load(path, allow_pickle=False) as f:
            shapes = _stored_shapes(f)
            if "__header__" not in f.files:
                raise ValueError("no fastmlp header")
            header = json.loads(str(f["__header__"]))
            if not isinstance(header, dict) or header.get("format") != FORMAT_NAME:
                raise ValueError("no fastmlp header")
            version = header.get("format_version")
            if not isinstance(version, int) or version > FORMAT_VERSION:
                raise _NewerFormat(f"{path} uses model format {version}; this fastmlp "
                                   f"({__version__}) reads format {FORMAT_VERSION} and older")
            config = dict(header["config"])
            _check_layers(config.get("layers"), shapes)
            return build(config, f, dict(header.get("meta") or {}), header.get("training"))
    except FileNotFoundError:
        raise
    except _NewerFormat as exc:
        raise ValueError(str(exc)) from None
    except _UNREADABLE as exc:
        raise ValueError(f"{path} is not a readable fastmlp model file ({exc})") from exc


_NPY_HEADERS = {(1, 0): np.lib.format.read_array_header_1_0,
                (2, 0): np.lib.format.read_array_header_2_0}


def _stored_shapes(f) -> dict:
    """``{name: shape}`` of the arrays of an open ``.npz``, from their headers alone,
    refusing an array that promises more bytes than its member holds: no array is
    then allocated beyond what the file's size justifies."""
    shapes = {}
    for info in f.zip.infolist():
        name = info.filename.removesuffix(".npy")
        with f.zip.open(info) as member:
            version = np.lib.format.read_magic(member)
            if version not in _NPY_HEADERS:
                raise ValueError(f"{name}: unsupported .npy version {version}")
            shape, _, dtype = _NPY_HEADERS[version](member)
        if dtype.hasobject:
            raise ValueError(f"{name} holds Python objects")
        promised = math.prod(shape) * dtype.itemsize
        if promised > info.file_size:
            raise ValueError(f"{name} promises {promised:,} bytes of shape {shape}, but the "
                             f"file holds {info.file_size:,}")
        shapes[name] = shape
    return shapes


def _check_layers(layers, shapes: dict) -> None:
    """Before a model of ``layers`` is allocated: they must be given, and its weights
    must be in the file with their shapes."""
    if not (isinstance(layers, list) and len(layers) >= 2
            and all(type(v) is int and v > 0 for v in layers)):
        raise ValueError(f"the configuration's layers must be a list of at least two "
                         f"positive integers, got {str(layers)[:60]}")
    for i, (a, b) in enumerate(zip(layers, layers[1:]), start=1):
        for name, shape in ((f"W{i}", (a, b)), (f"b{i}", (b,))):
            if name not in shapes:
                raise ValueError(f"{name} is missing")
            if shapes[name] != shape:
                raise ValueError(f"{name} has shape {shapes[name]}, the configuration's "
                                 f"layers {layers} give {shape}")


def training_state(model, arrays: dict, opt) -> dict:
    """The JSON part of ``model``'s training state with the optimizer ``opt`` (None:
    none stored); the optimizer's state arrays go into ``arrays`` as ``optimizer_state``."""
    state = {"epochs_trained": model.epochs_trained,
             "shuffle": model.shuffle_rng.bit_generator.state}
    if opt is not None:
        state["optimizer"] = {"config": opt.get_config(), "iterations": opt.iterations}
        if opt.state is not None:
            arrays["optimizer_state"] = opt.state
    return state


def restore_training(model, training, arrays) -> None:
    """Put back what :func:`training_state` took (nothing for a format 1 file). An
    optimizer this fastmlp cannot rebuild (a user's subclass) is left out, with a
    warning."""
    if not training:
        return
    model.epochs_trained = integer("epochs_trained", training["epochs_trained"], 0)
    model.shuffle_rng.bit_generator.state = training["shuffle"]
    spec = training.get("optimizer")
    if spec is None:
        return
    try:
        opt = optim.from_config(spec["config"])
    except ValueError as exc:
        warnings.warn(f"the model loads without its optimizer, which cannot be rebuilt "
                      f"({exc}); the next fit starts a new one", stacklevel=4)
        return
    state = arrays["optimizer_state"] if "optimizer_state" in arrays else None
    if state is not None and (state.shape[1:] != (model.n_params,)
                              or state.dtype != model.dtype):
        raise ValueError(f"optimizer_state has shape {state.shape} and dtype {state.dtype}, "
                         f"not (n_slots, {model.n_params}) {model.dtype}")
    opt.set_state(state, spec["iterations"])
    model.optimizer = opt
