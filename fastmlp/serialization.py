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
import os
import warnings
import zipfile

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
            if "__header__" not in f.files:
                raise ValueError("no fastmlp header")
            header = json.loads(str(f["__header__"]))
            if header.get("format") != FORMAT_NAME:
                raise ValueError("no fastmlp header")
            version = header.get("format_version")
            if not isinstance(version, int) or version > FORMAT_VERSION:
                raise _NewerFormat(f"{path} uses model format {version}; this fastmlp "
                                   f"({__version__}) reads format {FORMAT_VERSION} and older")
            return build(dict(header["config"]), f, dict(header.get("meta") or {}),
                         header.get("training"))
    except FileNotFoundError:
        raise
    except _NewerFormat as exc:
        raise ValueError(str(exc)) from None
    except (ValueError, KeyError, OSError, EOFError, zipfile.BadZipFile, TypeError) as exc:
        raise ValueError(f"{path} is not a readable fastmlp model file ({exc})") from exc


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
