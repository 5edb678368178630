"""Contract every outlier scorer meets, run over each scorer and auto_od."""

import pickle

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from detectors import (
    AutoOutlierDetector,
    ForestScorer,
    HalfSpaceScorer,
    TailScorer,
    build_profile,
)

DETECTORS = [TailScorer, ForestScorer, HalfSpaceScorer, AutoOutlierDetector]

# Minimum stream ROC AUC on the synthetic set below; the scorers reach more.
AUC_FLOOR = {
    TailScorer: 0.8,
    ForestScorer: 0.8,
    HalfSpaceScorer: 0.75,
    AutoOutlierDetector: 0.8,
}


def make_rows(rng, rows):
    """Two correlated numbers and a skewed category, as normal traffic."""
    base = rng.normal(size=rows)
    return pd.DataFrame(
        {
            "load": base + 0.3 * rng.normal(size=rows),
            "latency": 2.0 * base + 0.3 * rng.normal(size=rows),
            "region": rng.choice(["eu", "us", "ap"], rows, p=[0.6, 0.3, 0.1]),
            "retries": rng.poisson(1.0, rows),
        }
    )


def make_anomalies(rng, rows):
    """Rows that break the correlation, leave the range or use a rare region."""
    anomalies = make_rows(rng, rows)
    third = rows // 3
    anomalies.loc[: third - 1, "latency"] *= -1.0
    anomalies.loc[: third - 1, "latency"] += 3.0
    anomalies.loc[third : 2 * third - 1, "load"] += 6.0
    anomalies.loc[2 * third :, "retries"] += 8
    return anomalies


@pytest.fixture(scope="module")
def dataset():
    rng = np.random.default_rng(7)
    train = make_rows(rng, 2000)
    normal = make_rows(rng, 570)
    anomalies = make_anomalies(rng, 30)
    stream = pd.concat([normal, anomalies], ignore_index=True)
    labels = np.r_[np.zeros(len(normal)), np.ones(len(anomalies))]
    order = rng.permutation(len(stream))
    return train, stream.iloc[order].reset_index(drop=True), labels[order]


@pytest.fixture(scope="module")
def profile(dataset):
    return build_profile(dataset[0])


@pytest.fixture(scope="module", params=DETECTORS, ids=lambda kind: kind.__name__)
def fitted(request, dataset, profile):
    return request.param(profile, seed=3).fit(dataset[0])


def test_scores_one_float_per_row(fitted, dataset):
    scores = fitted.score_block(dataset[1])
    assert scores.shape == (len(dataset[1]),)
    assert scores.dtype == np.float64
    assert np.isfinite(scores).all()


def test_auc_above_floor(fitted, dataset):
    _, stream, labels = dataset
    auc = roc_auc_score(labels, fitted.score_block(stream))
    assert auc >= AUC_FLOOR[type(fitted)]


def test_pickle_round_trip_same_scores(fitted, dataset):
    stream = dataset[1]
    restored = pickle.loads(pickle.dumps(fitted))
    np.testing.assert_array_equal(
        restored.score_block(stream), fitted.score_block(stream)
    )


def test_column_order_irrelevant(fitted, dataset):
    stream = dataset[1]
    reordered = stream[list(reversed(stream.columns))]
    np.testing.assert_array_equal(
        fitted.score_block(reordered), fitted.score_block(stream)
    )


def test_records_score_like_frame(fitted, dataset):
    stream = dataset[1].head(50)
    records = stream.to_dict("records")
    np.testing.assert_allclose(fitted.score_block(records), fitted.score_block(stream))


def test_extra_feature_ignored(fitted, dataset):
    stream = dataset[1]
    widened = stream.assign(host=["a"] * len(stream), cpu=1.5)
    np.testing.assert_array_equal(
        fitted.score_block(widened), fitted.score_block(stream)
    )


def test_missing_feature_scored_as_missing(fitted, dataset):
    stream = dataset[1]
    dropped = stream.drop(columns=["latency"])
    emptied = stream.assign(latency=None)
    scores = fitted.score_block(dropped)
    assert np.isfinite(scores).all()
    np.testing.assert_array_equal(scores, fitted.score_block(emptied))


def test_missing_values_do_not_crash(fitted, profile):
    rows = [{}, {"load": None, "region": None}, {"load": float("nan"), "retries": 2}]
    assert np.isfinite(fitted.score_block(rows)).all()


def test_wrong_types_scored_as_missing(fitted):
    odd = [{"load": "1.0", "latency": [2], "region": {"a": 1}, "retries": True}]
    missing = [{}]
    np.testing.assert_array_equal(fitted.score_block(odd), fitted.score_block(missing))


def test_same_seed_same_scores(fitted, dataset, profile):
    train, stream, _ = dataset
    again = type(fitted)(profile, seed=3).fit(train)
    np.testing.assert_array_equal(again.score_block(stream), fitted.score_block(stream))


def test_far_row_scores_higher(fitted):
    typical = {"load": 0.0, "latency": 0.0, "region": "eu", "retries": 1}
    far = {"load": 40.0, "latency": -80.0, "region": "mars", "retries": 90}
    low, high = fitted.score_block([typical, far])
    assert high > low
