"""Callbacks: code that ``fit`` calls as training goes, with Keras's hook names.

``fit(..., callbacks=[...])`` calls, on every backend:

* ``on_train_begin(logs)`` and ``on_train_end(logs)`` once per ``fit``
  (``on_train_end`` also after Ctrl-C or a non-finite loss);
* ``on_epoch_begin(epoch, logs)`` and ``on_epoch_end(epoch, logs)``, with the
  epoch's ``loss``, ``accuracy`` (and ``val_loss``, ``val_accuracy``) in ``logs``;
  epochs are numbered across ``fit`` calls (see ``MLP.fit``'s ``initial_epoch``);
* ``on_batch_end(batch, logs)`` every ``batch_every`` steps, with the epoch's
  running ``loss`` and ``accuracy``. The ``cuda`` backend queues an epoch's
  steps without waiting, so there it is called once, at the end of the epoch.

A callback sees the model as ``self.model``; setting ``model.stop_training =
True`` ends ``fit`` after the current step (host backends) or epoch.

Example
-------
>>> from fastmlp.callbacks import EarlyStopping, ModelCheckpoint
>>> stop = EarlyStopping(monitor="val_loss", patience=3, restore_best_weights=True)
>>> save = ModelCheckpoint("best.npz", save_best_only=True)
>>> # model.fit(x, y, validation_split=0.1, epochs=50, callbacks=[stop, save])
"""

from __future__ import annotations

import csv
import math
import os
import sys
import time
import warnings
from collections.abc import Callable, Iterable
from typing import Any, TextIO

from ._util import bar, choose, integer, real


class Callback:
    """Base class: override the hooks you need (each does nothing here).

    Attributes
    ----------
    model : fastmlp.MLP
        The model being trained (set by ``fit``).
    params : dict
        ``epochs`` (this call's last epoch number + 1), ``steps`` (per epoch),
        ``batch_size`` and ``samples``.
    batch_every : int
        ``on_batch_end`` is called after every ``batch_every`` steps (default 1).
    """

    batch_every = 1

    def __init__(self) -> None:
        self.model: Any = None
        self.params: dict = {}

    def set_model(self, model: Any) -> None:
        self.model = model

    def set_params(self, params: dict) -> None:
        self.params = dict(params)

    def on_train_begin(self, logs: dict | None = None) -> None:
        """Called once, before the first epoch."""

    def on_train_end(self, logs: dict | None = None) -> None:
        """Called once, after the last epoch (or after training was stopped)."""

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        """Called before epoch ``epoch`` (numbered across ``fit`` calls, from 0)."""

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        """Called after epoch ``epoch`` with its metrics in ``logs`` (callbacks may add
        entries; they reach the History)."""

    def on_batch_end(self, batch: int, logs: dict | None = None) -> None:
        """Called after step ``batch`` of the epoch (from 0), every ``batch_every``
        steps, with the epoch's running ``loss`` and ``accuracy``."""

    def _wants_batches(self) -> bool:
        # Only callbacks that override on_batch_end are called per step (a runner
        # that takes many steps per call then takes no more than batch_every).
        return type(self).on_batch_end is not Callback.on_batch_end


class CallbackList:
    """The callbacks of one ``fit``, called in order (the progress display last)."""

    def __init__(self, callbacks: Iterable[Callback] | None, model: Any,
                 params: dict) -> None:
        callbacks = list(callbacks or [])
        for cb in callbacks:
            if not isinstance(cb, Callback):
                raise TypeError(f"callbacks must be fastmlp.callbacks.Callback instances, "
                                f"got {cb!r}")
        self.callbacks, self.model = callbacks, model
        for cb in callbacks:
            cb.set_model(model)
            cb.set_params(params)
        self.batch = [cb for cb in callbacks if cb._wants_batches()]
        for cb in self.batch:
            integer("batch_every", cb.batch_every, 1)

    @property
    def batch_every(self) -> int:
        """The fewest steps between two ``on_batch_end`` calls of any callback (0: none
        is called per step): a runner that takes many steps per call takes no more."""
        return min((cb.batch_every for cb in self.batch), default=0)

    @property
    def stop(self) -> bool:
        return bool(getattr(self.model, "stop_training", False))

    def on_train_begin(self, logs: dict | None = None) -> None:
        for cb in self.callbacks:
            cb.on_train_begin(logs)

    def on_train_end(self, logs: dict | None = None) -> None:
        for cb in self.callbacks:
            cb.on_train_end(logs)

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        for cb in self.callbacks:
            cb.on_epoch_begin(epoch, logs)

    def on_epoch_end(self, epoch: int, logs: dict) -> None:
        if self.model is not None:  # a checkpoint written now resumes after this epoch
            self.model.epochs_trained = epoch + 1
        for cb in self.callbacks:
            cb.on_epoch_end(epoch, logs)

    def on_steps_end(self, before: int, after: int, logs: dict) -> None:
        """Steps ``before`` to ``after`` of the epoch completed (one step on the host
        backends, many where a runner takes several per call)."""
        for cb in self.batch:
            every = cb.batch_every
            if after // every > before // every:
                cb.on_batch_end(after - 1, logs)


# --------------------------------------------------------------------------- progress
class ProgbarLogger(Callback):
    """Keras-like progress: on a terminal, a bar with an ETA refreshed at most 10
    times a second and a line per epoch (``verbose=1``); elsewhere (notebooks,
    logs, ``verbose=2``) one line per epoch. ``fit`` adds it for ``verbose > 0``."""

    def __init__(self, verbose: int = 1, stream: TextIO | None = None) -> None:
        super().__init__()
        self.verbose = verbose
        self.stream = stream or sys.stdout
        self.live = verbose == 1 and getattr(self.stream, "isatty", lambda: False)()
        self._last = self._t0 = 0.0
        self._epoch = 0

    def _steps(self) -> int:
        return self.params.get("steps", 0)

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self._epoch = epoch
        self._t0 = self._last = time.perf_counter()
        if self.live:
            print(f"Epoch {epoch + 1}/{self.params.get('epochs')}", file=self.stream,
                  flush=True)

    def _wants_batches(self) -> bool:
        return self.live  # the bar is drawn on a terminal only

    def on_batch_end(self, batch: int, logs: dict | None = None) -> None:
        if not self.live:
            return
        done, steps, now = batch + 1, self._steps(), time.perf_counter()
        if now - self._last < 0.1 and done < steps:
            return
        self._last = now
        eta = (now - self._t0) / done * max(steps - done, 0)
        logs = logs or {}
        self.stream.write(f"\r{done}/{steps} [{bar(done, steps)}] - ETA: {_duration(eta)} - "
                          f"loss: {logs['loss']:.4f} - accuracy: {logs['accuracy']:.4f}   ")
        self.stream.flush()

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        seconds = time.perf_counter() - self._t0
        parts = " - ".join(f"{k}: {v:.4g}" if k == "lr" else f"{k}: {v:.4f}"
                           for k, v in (logs or {}).items())
        steps = self._steps()
        if self.live:
            lead = "\r"
        else:
            lead = f"Epoch {epoch + 1}/{self.params.get('epochs')} - "
        print(f"{lead}{steps}/{steps} - {seconds:.2f}s - {parts}" + " " * 10,
              file=self.stream, flush=True)

    def on_train_end(self, logs: dict | None = None) -> None:
        if self.live and logs is not None and logs.get("interrupted"):
            print(file=self.stream, flush=True)


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    if seconds >= 3600:
        return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"
    if seconds >= 60:
        return f"{seconds // 60}:{seconds % 60:02d}"
    return f"{seconds}s"


# --------------------------------------------------------------------------- monitors
class _Monitor(Callback):
    """Watches one metric of ``logs`` for improvement (shared by the callbacks below)."""

    def __init__(self, monitor: str, mode: str, min_delta: float) -> None:
        super().__init__()
        if not isinstance(monitor, str) or not monitor:
            raise TypeError(f"monitor must be a metric name such as 'val_loss', got "
                            f"{monitor!r}")
        self.monitor = monitor
        self.mode = choose("mode", mode, ("auto", "min", "max"))
        if mode == "auto":
            mode = "max" if "acc" in monitor else "min"
        self._sign = 1.0 if mode == "min" else -1.0
        self.min_delta = abs(real("min_delta", min_delta))

    best_epoch: int | None = None

    def reset(self) -> None:
        self.best = math.inf
        self.best_epoch = None

    def value(self, logs: dict | None) -> float | None:
        """The monitored value in ``logs`` (None, with a warning, when missing)."""
        value = (logs or {}).get(self.monitor)
        if value is None:
            warnings.warn(f"{type(self).__name__}: metric {self.monitor!r} is not available "
                          f"(the logs have {', '.join(logs or {}) or 'nothing'}); pass "
                          f"validation data to monitor a val_ metric", stacklevel=3)
        return value

    def improved(self, value: float) -> bool:
        """Whether ``value`` beats the best so far by ``min_delta`` (and records it)."""
        score = self._sign * value
        if score < self.best - self.min_delta:
            self.best = score
            return True
        return False

    @property
    def best_value(self) -> float | None:
        return None if self.best_epoch is None else self._sign * self.best


class EarlyStopping(_Monitor):
    """Stop training when ``monitor`` has not improved for ``patience`` epochs.

    Parameters
    ----------
    monitor : str
        A key of the epoch logs: ``val_loss`` (default), ``val_accuracy``, ``loss``...
    min_delta : float
        Smallest change that counts as an improvement.
    patience : int
        Epochs without improvement before stopping.
    mode : {"auto", "min", "max"}
        ``auto``: ``max`` for accuracies, else ``min``.
    restore_best_weights : bool
        At the end of training, put back the weights of the best epoch.
    """

    def __init__(self, monitor: str = "val_loss", min_delta: float = 0.0, patience: int = 0,
                 mode: str = "auto", restore_best_weights: bool = False) -> None:
        super().__init__(monitor, mode, min_delta)
        self.patience = integer("patience", patience, 0)
        self.restore_best_weights = bool(restore_best_weights)

    def on_train_begin(self, logs: dict | None = None) -> None:
        self.reset()
        self.wait = 0
        self.stopped_epoch: int | None = None
        self.best_weights: list | None = None

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        value = self.value(logs)
        if value is None:
            return
        if self.improved(value):
            self.best_epoch, self.wait = epoch, 0
            if self.restore_best_weights:
                self.best_weights = self.model.get_weights()
            return
        self.wait += 1
        if self.wait >= self.patience:
            self.stopped_epoch = epoch
            self.model.stop_training = True

    def on_train_end(self, logs: dict | None = None) -> None:
        if self.best_weights is not None:
            self.model.set_weights(self.best_weights)


class ModelCheckpoint(_Monitor):
    """Save the model (weights, optimizer state and shuffling state: a resumable
    file) after each epoch, atomically.

    Parameters
    ----------
    filepath : str or path-like
        May hold ``{epoch}`` (from 1) and log keys: ``"ckpt-{epoch:02d}-{val_loss:.3f}.npz"``.
    monitor : str
        The metric ``save_best_only`` compares.
    save_best_only : bool
        Save only when ``monitor`` improves.
    mode : {"auto", "min", "max"}
    """

    def __init__(self, filepath: str | os.PathLike, monitor: str = "val_loss",
                 save_best_only: bool = False, mode: str = "auto") -> None:
        super().__init__(monitor, mode, 0.0)
        self.filepath = os.fspath(filepath)
        self.save_best_only = bool(save_best_only)
        self.reset()

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        logs = logs or {}
        if self.save_best_only:
            value = self.value(logs)
            if value is None or not self.improved(value):
                return
            self.best_epoch = epoch
        try:
            path = self.filepath.format(epoch=epoch + 1, **logs)
        except (KeyError, IndexError, ValueError) as exc:
            raise ValueError(f"ModelCheckpoint: cannot fill in {self.filepath!r} from the "
                             f"epoch and logs {sorted(logs)} ({exc})") from None
        self.model.save(path)
        self.last_path = path


# --------------------------------------------------------------------------- learning rate
class LearningRateScheduler(Callback):
    """Set the learning rate before each epoch to ``schedule(epoch, lr)``.

    The new rate applies from the epoch's first step, on every backend; it is
    logged as ``lr``.
    """

    def __init__(self, schedule: Callable[[int, float], float], verbose: int = 0) -> None:
        super().__init__()
        if not callable(schedule):
            raise TypeError(f"schedule must be callable as schedule(epoch, lr), got "
                            f"{schedule!r}")
        self.schedule, self.verbose = schedule, verbose

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        opt = self.model.optimizer
        lr = self.schedule(epoch, opt.lr)
        opt.lr = real("the learning rate from the schedule", lr, low=0, low_open=True)
        if self.verbose:
            print(f"Epoch {epoch + 1}: LearningRateScheduler sets the learning rate to {lr:g}")

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        if logs is not None:
            logs["lr"] = self.model.optimizer.lr


class ReduceLROnPlateau(_Monitor):
    """Multiply the learning rate by ``factor`` when ``monitor`` has not improved for
    ``patience`` epochs, then wait ``cooldown`` epochs; never below ``min_lr``."""

    def __init__(self, monitor: str = "val_loss", factor: float = 0.1, patience: int = 10,
                 mode: str = "auto", min_delta: float = 1e-4, cooldown: int = 0,
                 min_lr: float = 0.0, verbose: int = 0) -> None:
        super().__init__(monitor, mode, min_delta)
        self.factor = real("factor", factor, 0, 1, low_open=True, high_open=True)
        self.patience = integer("patience", patience, 0)
        self.cooldown = integer("cooldown", cooldown, 0)
        self.min_lr = real("min_lr", min_lr, low=0)
        self.verbose = verbose

    def on_train_begin(self, logs: dict | None = None) -> None:
        self.reset()
        self.wait = self.cooldown_left = 0

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        opt = self.model.optimizer
        value = self.value(logs)
        if value is not None:
            if self.cooldown_left > 0:
                self.cooldown_left -= 1
                self.wait = 0
            if self.improved(value):
                self.best_epoch, self.wait = epoch, 0
            elif self.cooldown_left == 0:
                self.wait += 1
                if self.wait >= self.patience and opt.lr > self.min_lr:
                    opt.lr = max(opt.lr * self.factor, self.min_lr)
                    self.cooldown_left, self.wait = self.cooldown, 0
                    if self.verbose:
                        print(f"Epoch {epoch + 1}: ReduceLROnPlateau reduces the learning "
                              f"rate to {opt.lr:g}")
        if logs is not None:
            logs["lr"] = opt.lr


# --------------------------------------------------------------------------- logging
class CSVLogger(Callback):
    """Write each epoch's logs as a row of a CSV file (``epoch`` first), flushed
    after every row so that the file is complete up to the last epoch.

    Parameters
    ----------
    filename : str or path-like
    separator : str
    append : bool
        Add to an existing file (resumed training) instead of replacing it.
    """

    def __init__(self, filename: str | os.PathLike, separator: str = ",",
                 append: bool = False) -> None:
        super().__init__()
        self.filename, self.separator, self.append = os.fspath(filename), separator, append
        self._file: Any = None
        self._writer: Any = None

    def on_train_begin(self, logs: dict | None = None) -> None:
        exists = self.append and os.path.exists(self.filename) \
            and os.path.getsize(self.filename) > 0
        self._header = None
        if exists:
            with open(self.filename, newline="") as f:
                self._header = next(csv.reader(f, delimiter=self.separator), None)
        self._file = open(self.filename, "a" if self.append else "w", newline="")  # noqa: SIM115
        self._writer = None

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        logs = dict(logs or {})
        if self._writer is None:
            fields = self._header or ["epoch", *logs]
            self._writer = csv.DictWriter(self._file, fields, delimiter=self.separator,
                                          extrasaction="ignore", restval="")
            if self._header is None:
                self._writer.writeheader()
        self._writer.writerow({"epoch": epoch, **logs})
        self._file.flush()

    def on_train_end(self, logs: dict | None = None) -> None:
        if self._file is not None:
            self._file.close()
            self._file = self._writer = None
