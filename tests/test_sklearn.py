"""The scikit-learn estimators: scikit-learn's own check_estimator, labels of any
kind, Pipeline and GridSearchCV (processes and a Dask cluster), partial_fit and
warm_start, and the thread count under threadpoolctl and n_threads."""

import pickle
import warnings

import numpy as np
import pytest
from conftest import extra

import fastmlp

sklearn = extra("sklearn", "sklearn")
from sklearn.base import clone  # noqa: E402
from sklearn.model_selection import GridSearchCV  # noqa: E402
from sklearn.pipeline import make_pipeline  # noqa: E402
from sklearn.preprocessing import StandardScaler  # noqa: E402
from sklearn.utils.estimator_checks import parametrize_with_checks  # noqa: E402

from fastmlp.sklearn import MLPClassifier, MLPRegressor  # noqa: E402


def blobs(n=240, seed=0, labels=("cat", "dog", "eel")):
    rng = np.random.default_rng(seed)
    k = rng.integers(0, len(labels), n)
    x = rng.normal(size=(n, 6)) + 3 * np.eye(len(labels), 6)[k]
    return x, np.asarray(labels)[k]


@parametrize_with_checks([MLPClassifier(random_state=0), MLPRegressor(random_state=0),
                          MLPClassifier(random_state=1, backend="numpy", dtype="float64",
                                        early_stopping=True, solver="rmsprop"),
                          MLPRegressor(random_state=1, backend="numpy", dtype="float64",
                                       early_stopping=True, activation="tanh")])
def test_scikit_learn_check_estimator(estimator, check):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        check(estimator)


def test_string_labels_probabilities_and_score():
    x, y = blobs()
    clf = MLPClassifier((16,), max_iter=60, random_state=0).fit(x, y)
    assert list(clf.classes_) == ["cat", "dog", "eel"]
    p = clf.predict_proba(x)
    assert p.shape == (len(x), 3) and p.dtype == np.float64
    np.testing.assert_allclose(p.sum(axis=1), 1, rtol=1e-6)
    assert set(clf.predict(x)) <= set(clf.classes_) and clf.score(x, y) > 0.9
    assert clf.n_iter_ == len(clf.loss_curve_) <= 60
    assert [w.shape for w in clf.coefs_] == [(6, 16), (16, 3)]
    with pytest.raises(ValueError, match="not in classes_"):
        clf.partial_fit(x[:5], np.array(["cat", "emu", "dog", "cat", "cat"]))


def test_fit_is_reproducible_and_stops_on_a_flat_loss():
    x, y = blobs()
    a = MLPClassifier((8,), max_iter=500, tol=1e9, n_iter_no_change=3,
                      random_state=4).fit(x, y)
    assert a.n_iter_ == 4  # the first epoch, then 3 without an improvement of 1e9
    b = clone(a).fit(x, y)
    np.testing.assert_array_equal(a.predict_proba(x), b.predict_proba(x))


def test_partial_fit_and_warm_start_go_on_bitwise():
    x, y = blobs()
    whole = MLPClassifier((8,), max_iter=3, tol=-1.0, random_state=2).fit(x, y)
    part = MLPClassifier((8,), max_iter=1, tol=-1.0, random_state=2)
    part.partial_fit(x, y, classes=["cat", "dog", "eel"])
    part.partial_fit(x, y)
    part = pickle.loads(pickle.dumps(part))
    part.partial_fit(x, y)
    np.testing.assert_array_equal(part.predict_proba(x), whole.predict_proba(x))
    warm = MLPClassifier((8,), max_iter=1, tol=-1.0, random_state=2, warm_start=True)
    for _ in range(3):
        warm.fit(x, y)
    np.testing.assert_array_equal(warm.predict_proba(x), whole.predict_proba(x))
    assert warm.n_iter_ == 3
    with pytest.raises(ValueError, match="needs classes"):
        MLPClassifier().partial_fit(x, y)


def test_regressor_one_and_two_outputs():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(300, 4))
    y = x @ np.array([1.0, -2.0, 0.5, 0.0])
    reg = MLPRegressor((16,), max_iter=200, learning_rate_init=1e-2, random_state=0)
    assert reg.fit(x, y).predict(x).shape == (300,) and reg.score(x, y) > 0.95
    y2 = np.stack([y, -y], axis=1)
    assert reg.fit(x, y2).predict(x).shape == (300, 2)


def test_bad_parameters_are_named():
    x, y = blobs(n=30)
    for kw, match in [({"hidden_layer_sizes": (4, 0)}, "hidden_layer_sizes"),
                      ({"activation": "swish"}, "unknown activation"),
                      ({"solver": "lbfgs"}, "unknown optimizer"),
                      ({"max_iter": 0}, "max_iter"),
                      ({"batch_size": -1}, "batch_size"),
                      ({"validation_fraction": 1.0}, "validation_fraction"),
                      ({"alpha": -1}, "alpha")]:
        with pytest.raises(ValueError, match=match):
            MLPClassifier(**kw).fit(x, y)
    with pytest.raises(ValueError, match="at least 2 classes"):
        MLPClassifier().fit(x, np.zeros(len(x)))


def test_pipeline_and_grid_search_in_processes_match_one_process():
    x, y = blobs(n=150)
    pipe = make_pipeline(StandardScaler(), MLPClassifier(max_iter=40, learning_rate_init=1e-2,
                                                         random_state=0))
    grid = {"mlpclassifier__hidden_layer_sizes": [(4,), (16,)],
            "mlpclassifier__solver": ["adam", "nesterov"]}
    one = GridSearchCV(pipe, grid, cv=3, n_jobs=1).fit(x, y)
    two = GridSearchCV(pipe, grid, cv=3, n_jobs=2).fit(x, y)
    np.testing.assert_array_equal(one.cv_results_["mean_test_score"],
                                  two.cv_results_["mean_test_score"])
    assert one.best_params_ == two.best_params_ and one.score(x, y) > 0.9


def test_threadpoolctl_sees_and_limits_the_openmp_pool(threads):
    threadpoolctl = extra("threadpoolctl", "sklearn")
    if not fastmlp.threads.openmp_enabled():
        pytest.skip("the cpu backend was built without OpenMP")
    fastmlp.set_num_threads(2)
    apis = {i["internal_api"] for i in threadpoolctl.threadpool_info()}
    assert "openmp" in apis
    with threadpoolctl.threadpool_limits(1, user_api="openmp"):
        assert fastmlp.get_num_threads() == 1
    assert fastmlp.get_num_threads() == 2
    seen = []

    class Spy(fastmlp.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            seen.append(fastmlp.get_num_threads())

    x, y = blobs(n=40)
    with fastmlp.threads.num_threads(1):
        fastmlp.MLP([6, 4, 3], ["relu", "softmax"]).fit(x, y == "cat", epochs=1, verbose=0,
                                                         callbacks=[Spy()])
    assert seen == [1] and fastmlp.get_num_threads() == 2


def test_n_threads_gives_the_same_bits(threads):
    x, y = blobs()
    a = MLPClassifier((32,), max_iter=5, random_state=0, n_threads=1).fit(x, y)
    b = MLPClassifier((32,), max_iter=5, random_state=0, n_threads=2).fit(x, y)
    np.testing.assert_array_equal(a.predict_proba(x), b.predict_proba(x))


@pytest.mark.slow
def test_grid_search_on_a_dask_local_cluster():
    distributed = extra("distributed", "dask")
    joblib = extra("joblib", "sklearn")
    x, y = blobs(n=150)
    grid = {"hidden_layer_sizes": [(4,), (16,)], "learning_rate_init": [1e-3, 1e-2]}
    est = MLPClassifier(max_iter=15, random_state=0)
    local = GridSearchCV(est, grid, cv=2, n_jobs=1).fit(x, y)
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  dashboard_address=None) as cluster, \
            distributed.Client(cluster) as client:
        worker_threads = client.run(fastmlp.get_num_threads)
        with joblib.parallel_backend("dask"):
            remote = GridSearchCV(est, grid, cv=2, n_jobs=-1).fit(x, y)
    assert len(worker_threads) == 2 and set(worker_threads.values()) == {1}
    np.testing.assert_array_equal(local.cv_results_["mean_test_score"],
                                  remote.cv_results_["mean_test_score"])
