"""The model file: a versioned ``.npz`` holding a JSON header and the weights.

The header names the format and its version, the fastmlp version that wrote
it, the model's configuration and its free-form ``meta``; each parameter array
is stored under its name (``W1``, ``b1``, ...). Files are written atomically.
"""

from __future__ import annotations

import json
import os
import zipfile

import numpy as np

from ._util import atomic_write
from ._version import __version__

#: Version of the saved-model format; ``read`` reads this version and older ones.
FORMAT_VERSION = 1
FORMAT_NAME = "fastmlp-model"


def write(path, config: dict, meta: dict, arrays: dict) -> None:
    """Write ``config``, ``meta`` and the named ``arrays`` to ``path``, atomically."""
    header = {"format": FORMAT_NAME, "format_version": FORMAT_VERSION,
              "fastmlp_version": __version__, "config": config, "meta": meta}
    with atomic_write(path) as f:
        np.savez(f, __header__=np.array(json.dumps(header)), **arrays)


class _NewerFormat(Exception):
    pass


def read(path, build):
    """Read a model file and return ``build(config, arrays, meta)``, where ``arrays``
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
            return build(dict(header["config"]), f, dict(header.get("meta") or {}))
    except FileNotFoundError:
        raise
    except _NewerFormat as exc:
        raise ValueError(str(exc)) from None
    except (ValueError, KeyError, OSError, EOFError, zipfile.BadZipFile, TypeError) as exc:
        raise ValueError(f"{path} is not a readable fastmlp model file ({exc})") from exc
