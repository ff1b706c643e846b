"""Callbacks: the hooks in order, early stopping, checkpoints, learning-rate
schedules, CSV logs, stop_training, and the progress display."""

import csv
import io
import os

import numpy as np
import pytest

import fastmlp
from fastmlp.callbacks import (
    Callback,
    CSVLogger,
    EarlyStopping,
    LearningRateScheduler,
    ModelCheckpoint,
    ProgbarLogger,
    ReduceLROnPlateau,
)

LAYERS, ACTS = [12, 10, 4], ["relu", "softmax"]


def data(n=120, seed=0):
    rng = np.random.default_rng(seed)
    return rng.random((n, LAYERS[0])), rng.integers(0, LAYERS[-1], n)


def model(backend="cpu"):
    return fastmlp.MLP(LAYERS, ACTS, backend=backend, seed=2)


class Recorder(Callback):
    batch_every = 3

    def __init__(self):
        super().__init__()
        self.calls = []

    def on_train_begin(self, logs=None):
        self.calls.append(("train_begin",))

    def on_epoch_begin(self, epoch, logs=None):
        self.calls.append(("epoch_begin", epoch))

    def on_batch_end(self, batch, logs=None):
        self.calls.append(("batch_end", batch, round(logs["loss"], 12)))

    def on_epoch_end(self, epoch, logs=None):
        self.calls.append(("epoch_end", epoch, sorted(logs)))

    def on_train_end(self, logs=None):
        self.calls.append(("train_end",))


@pytest.mark.parametrize("backend", ["numpy", "cpu"])
def test_hooks_in_order_with_batch_every(backend):
    rec = Recorder()
    m = model(backend)
    m.fit(*data(), epochs=2, batch_size=16, verbose=0, callbacks=[rec],
          validation_split=0.25)  # 90 samples: 6 steps per epoch
    kinds = [c[0] for c in rec.calls]
    assert kinds == ["train_begin", "epoch_begin", "batch_end", "batch_end", "epoch_end",
                     "epoch_begin", "batch_end", "batch_end", "epoch_end", "train_end"]
    assert [c[1] for c in rec.calls if c[0] == "batch_end"] == [2, 5, 2, 5]
    assert rec.calls[4] == ("epoch_end", 0, ["accuracy", "loss", "val_accuracy", "val_loss"])
    assert rec.params == {"epochs": 2, "samples": 90, "batch_size": 16, "steps": 6}
    assert rec.model is m
    # The last batch's running loss is the epoch's loss.
    assert rec.calls[3][2] == round(m.history.history["loss"][0], 12)
    m.fit(*data(), epochs=1, batch_size=16, verbose=0, callbacks=[rec])
    assert ("epoch_begin", 2) in rec.calls


def test_stop_training_from_a_batch_ends_fit_after_that_step():
    class StopAt(Callback):
        def on_batch_end(self, batch, logs=None):
            if batch == 2:
                self.model.stop_training = True

    m = model()
    h = m.fit(*data(), epochs=3, batch_size=16, verbose=0, callbacks=[StopAt()])
    assert h.steps == 3 and h.epoch == [0] and not h.interrupted
    assert m.epochs_trained == 1


def test_early_stopping_restores_the_best_weights():
    class Scripted(Callback):
        """Replaces val_loss by a script: best at epoch 1, then worse."""

        def __init__(self):
            super().__init__()
            self.weights = {}

        def on_epoch_end(self, epoch, logs=None):
            logs["val_loss"] = [3.0, 1.0, 2.0, 2.5, 2.6, 2.7][epoch]
            self.weights[epoch] = self.model.get_weights()

    script = Scripted()
    stop = EarlyStopping(monitor="val_loss", patience=2, restore_best_weights=True)
    m = model()
    h = m.fit(*data(), epochs=6, batch_size=32, verbose=0, callbacks=[script, stop])
    assert h.epoch == [0, 1, 2, 3] and stop.stopped_epoch == 3 and stop.best_epoch == 1
    for got, want in zip(m.get_weights(), script.weights[1]):
        np.testing.assert_array_equal(got, want)


def test_early_stopping_on_accuracy_with_min_delta():
    stop = EarlyStopping(monitor="accuracy", min_delta=2.0, patience=1)
    assert stop.mode == "auto"
    h = model().fit(*data(), epochs=10, batch_size=32, verbose=0, callbacks=[stop])
    # Nothing improves accuracy by 2: the first epoch is the best, patience 1 ends it.
    assert h.epoch == [0, 1] and stop.best_value == h.history["accuracy"][0]


def test_a_missing_metric_warns():
    with pytest.warns(UserWarning, match="'val_loss' is not available"):
        model().fit(*data(), epochs=1, verbose=0, callbacks=[EarlyStopping()])


def test_model_checkpoint_saves_resumable_files(tmp_path):
    x, y = data()
    path = str(tmp_path / "ck-{epoch:02d}-{val_loss:.3f}.npz")
    ck = ModelCheckpoint(path, monitor="val_loss")
    m = model()
    m.fit(x, y, epochs=3, batch_size=16, verbose=0, validation_split=0.25, callbacks=[ck])
    names = sorted(os.listdir(tmp_path))
    assert len(names) == 3 and names[0].startswith("ck-01-")
    assert not [n for n in names if n.endswith(".tmp")]
    # Resume from epoch 2's file: bitwise the weights of the uninterrupted run.
    back = fastmlp.load(tmp_path / names[1])
    assert back.epochs_trained == 2
    back.fit(x, y, epochs=1, batch_size=16, verbose=0, validation_split=0.25)
    np.testing.assert_array_equal(back.params.flat, m.params.flat)


def test_model_checkpoint_best_only(tmp_path):
    class Worse(Callback):
        def on_epoch_end(self, epoch, logs=None):
            logs["val_loss"] = [1.0, 2.0, 0.5][epoch]

    ck = ModelCheckpoint(tmp_path / "best.npz", save_best_only=True)
    m = model()
    m.fit(*data(), epochs=3, verbose=0, callbacks=[Worse(), ck])
    assert ck.best_epoch == 2 and fastmlp.load(tmp_path / "best.npz").epochs_trained == 3
    bad = ModelCheckpoint(tmp_path / "{nope}.npz")
    with pytest.raises(ValueError, match="cannot fill in"):
        m.fit(*data(), epochs=1, verbose=0, callbacks=[bad])


def test_scheduler_equals_fits_with_each_rate():
    x, y = data()
    rates = [1e-2, 3e-3, 1e-3]
    sched = LearningRateScheduler(lambda epoch, lr: rates[epoch])
    a = model()
    h = a.fit(x, y, epochs=3, batch_size=16, optimizer="adam", verbose=0, callbacks=[sched])
    assert h.history["lr"] == rates
    b = model()
    b.fit(x, y, epochs=1, batch_size=16, optimizer="adam", lr=rates[0], verbose=0)
    for lr in rates[1:]:
        b.fit(x, y, epochs=1, batch_size=16, lr=lr, verbose=0)
    np.testing.assert_array_equal(a.params.flat, b.params.flat)
    with pytest.raises(ValueError, match="learning rate from the schedule"):
        model().fit(x, y, epochs=1, verbose=0,
                    callbacks=[LearningRateScheduler(lambda e, lr: -1.0)])


def test_reduce_lr_on_plateau():
    class Flat(Callback):
        def on_epoch_end(self, epoch, logs=None):
            logs["val_loss"] = 1.0

    red = ReduceLROnPlateau(factor=0.5, patience=1, cooldown=2, min_lr=2e-4)
    h = model().fit(*data(), epochs=7, optimizer="sgd", lr=1e-3, verbose=0,
                    callbacks=[Flat(), red])
    # Keras's rule: reduce after `patience` epochs without improvement, then skip
    # `cooldown` epochs (counted from the epoch after the reduction); never below min_lr.
    assert h.history["lr"] == [1e-3, 5e-4, 5e-4, 2.5e-4, 2.5e-4, 2e-4, 2e-4]


def test_csv_logger_writes_and_appends(tmp_path):
    path = tmp_path / "log.csv"
    m = model()
    m.fit(*data(), epochs=2, verbose=0, validation_split=0.25, callbacks=[CSVLogger(path)])
    m.fit(*data(), epochs=1, verbose=0, validation_split=0.25,
          callbacks=[CSVLogger(path, append=True)])
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["epoch"] for r in rows] == ["0", "1", "2"]
    assert list(rows[0]) == ["epoch", "loss", "accuracy", "val_loss", "val_accuracy"]
    assert float(rows[2]["val_loss"]) == m.history.history["val_loss"][0]


def test_bad_callbacks_and_arguments():
    with pytest.raises(TypeError, match="Callback instances"):
        model().fit(*data(), epochs=1, verbose=0, callbacks=[print])
    with pytest.raises(ValueError, match="mode"):
        EarlyStopping(mode="up")
    with pytest.raises(ValueError, match="factor"):
        ReduceLROnPlateau(factor=1.5)
    with pytest.raises(TypeError, match="callable"):
        LearningRateScheduler(0.1)


class Terminal(io.StringIO):
    def isatty(self):
        return True


def run_progress(stream, verbose):
    m = model()
    cbs = fastmlp.callbacks.CallbackList([ProgbarLogger(verbose, stream)], m,
                                         {"epochs": 2, "steps": 4})
    logs = {"loss": 0.5, "accuracy": 0.25}
    for epoch in range(2):
        cbs.on_epoch_begin(epoch)
        for s in range(4):
            cbs.on_steps_end(s, s + 1, logs)
        cbs.on_epoch_end(epoch, logs)
    return stream.getvalue()


def test_progress_one_line_per_epoch_off_a_terminal_and_an_eta_on_one():
    plain = run_progress(io.StringIO(), 1)
    assert plain.count("\n") == 2 and plain.startswith("Epoch 1/2 - 4/4 - ")
    assert "ETA" not in plain
    live = run_progress(Terminal(), 1)
    assert "ETA: 0s" in live and live.startswith("Epoch 1/2\n")
    two = run_progress(Terminal(), 2)
    assert "ETA" not in two and two.count("\n") == 2 and two.startswith("Epoch 1/2 - ")
