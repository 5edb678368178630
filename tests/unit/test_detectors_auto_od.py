"""auto_od: score-then-learn order, threshold, and the river Half-Space Trees."""

import copy
import pickle

import numpy as np
import pandas as pd
import pytest

from detectors import AutoOutlierDetector, HalfSpaceScorer, build_profile
from detectors.forest import ForestScorer


def normal_rows(rng, rows):
    base = rng.normal(size=rows)
    return pd.DataFrame(
        {
            "a": base + 0.2 * rng.normal(size=rows),
            "b": rng.exponential(size=rows),
            "c": rng.choice(["x", "y", "z"], rows, p=[0.5, 0.4, 0.1]),
        }
    )


@pytest.fixture(scope="module")
def train():
    return normal_rows(np.random.default_rng(0), 2000)


@pytest.fixture(scope="module")
def stream():
    rng = np.random.default_rng(1)
    rows = normal_rows(rng, 400)
    # Every 20th row is far away, so some rows are not learned.
    rows.loc[::20, "a"] = 25.0
    return rows


@pytest.fixture(scope="module")
def fitted(train):
    profile = build_profile(train)
    options = {"window_size": 50}
    return AutoOutlierDetector(profile, seed=0, halfspace_options=options).fit(train)


@pytest.fixture
def detector(fitted):
    return copy.deepcopy(fitted)


def test_block_equals_row_by_row(detector, stream):
    one_by_one = copy.deepcopy(detector)
    records = stream.head(230).to_dict("records")
    block = detector.score_and_learn(records, learn=True)
    rows = [one_by_one.score_and_learn([record], learn=True)[0] for record in records]
    np.testing.assert_allclose(block, rows, rtol=0, atol=1e-12)
    assert detector.halfspace.model_.counter == one_by_one.halfspace.model_.counter


def test_learning_changes_later_scores(detector, stream):
    frozen = copy.deepcopy(detector)
    learned = detector.score_and_learn(stream, learn=True)
    static = frozen.score_and_learn(stream, learn=False)
    # The first window is scored alike; later windows see the learned masses.
    np.testing.assert_array_equal(learned[:50], static[:50])
    assert not np.array_equal(learned, static)


def test_outliers_not_learned(detector):
    far = pd.DataFrame({"a": [40.0] * 10, "b": [90.0] * 10, "c": ["q"] * 10})
    before = detector.halfspace.model_.counter
    scores = detector.score_and_learn(far, learn=True)
    assert (scores > detector.threshold_).all()
    assert detector.halfspace.model_.counter == before


def test_normal_rows_learned(detector, train):
    before = detector.halfspace.model_.counter
    detector.score_and_learn(train.head(10), learn=True)
    assert detector.halfspace.model_.counter == before + 10


def test_learn_false_keeps_state(detector, stream):
    state = copy.deepcopy(detector.halfspace.model_)
    detector.score_and_learn(stream, learn=False)
    masses = [
        (n.l_mass, n.r_mass)
        for t in detector.halfspace.model_.trees
        for n in t.iter_dfs()
    ]
    expected = [(n.l_mass, n.r_mass) for t in state.trees for n in t.iter_dfs()]
    assert masses == expected


def test_alert_rate_near_target(train):
    profile = build_profile(train)
    detector = AutoOutlierDetector(profile, seed=0, target_alert_rate=0.02).fit(train)
    fresh = normal_rows(np.random.default_rng(5), 5000)
    rate = (detector.score_and_learn(fresh, learn=True) > detector.threshold_).mean()
    assert 0.01 <= rate <= 0.04


def test_calibration_covers_every_training_row(detector, train):
    assert len(detector.calibration_scores_) == len(train)
    expected = np.quantile(detector.calibration_scores_, 0.99)
    assert detector.threshold_ == expected


@pytest.mark.parametrize("rate", [0, 1, -0.1, 1.5])
def test_target_alert_rate_validated(train, rate):
    with pytest.raises(ValueError, match="target_alert_rate"):
        AutoOutlierDetector(build_profile(train), target_alert_rate=rate)


@pytest.fixture
def halfspace(train):
    return HalfSpaceScorer(build_profile(train), seed=2, window_size=40).fit(train)


def test_halfspace_scores_equal_river_score_one(halfspace, stream):
    encoded = halfspace.encoder.bounded(halfspace.check(stream))
    river = [halfspace.model_.score_one(halfspace._as_dict(row)) for row in encoded]
    np.testing.assert_allclose(
        halfspace.score_encoded(encoded), river, rtol=0, atol=1e-12
    )


def test_halfspace_block_learning_equals_learn_one(halfspace, stream):
    reference = copy.deepcopy(halfspace)
    encoded = halfspace.encoder.bounded(halfspace.check(stream))
    halfspace.learn_block(stream)
    for row in encoded:
        reference.model_.learn_one(reference._as_dict(row))
    ours = [(n.l_mass, n.r_mass) for t in halfspace.model_.trees for n in t.iter_dfs()]
    river = [(n.l_mass, n.r_mass) for t in reference.model_.trees for n in t.iter_dfs()]
    assert ours == river
    assert halfspace.model_.counter == reference.model_.counter


def test_halfspace_warm_start_uses_all_rows(halfspace, train):
    root_masses = [tree.r_mass for tree in halfspace.model_.trees]
    # Every training row passes the root, scaled to one window.
    assert root_masses == [pytest.approx(40.0)] * len(root_masses)
    assert halfspace.model_.counter == 0


def test_halfspace_rejects_rows_past_window(halfspace, stream):
    encoded = halfspace.encoder.bounded(halfspace.check(stream))
    with pytest.raises(ValueError, match="split the block at window ends"):
        halfspace.learn_encoded(encoded[:41])


def test_halfspace_pickle_keeps_learned_masses(halfspace, stream):
    # 100 rows cross two window ends of 40 and leave 20 rows learned.
    halfspace.learn_block(stream.head(100))
    restored = pickle.loads(pickle.dumps(halfspace))
    encoded = halfspace.encoder.bounded(halfspace.check(stream))
    np.testing.assert_array_equal(
        restored.score_encoded(encoded), halfspace.score_encoded(encoded)
    )
    assert restored.model_.counter == 20
    learned = [n.l_mass for t in restored.model_.trees for n in t.iter_dfs()]
    assert sum(learned) > 0


def test_halfspace_sees_changes_through_model(halfspace, stream):
    encoded = halfspace.encoder.bounded(halfspace.check(stream))
    halfspace.learn_encoded(encoded[:30])
    # Learning through river directly completes the window of 40.
    for row in encoded[30:40]:
        halfspace.model_.learn_one(halfspace._as_dict(row))
    river = [halfspace.model_.score_one(halfspace._as_dict(row)) for row in encoded]
    np.testing.assert_allclose(
        halfspace.score_encoded(encoded), river, rtol=0, atol=1e-12
    )
    assert halfspace.rows_to_window_end == 40


def test_forest_scores_equal_scikit_learn(train, stream):
    forest = ForestScorer(build_profile(train), seed=3, n_trees=50).fit(train)
    encoded = forest.encoder.unit(forest.check(stream))
    # Rows far outside training reach the deepest leaves and the shallowest.
    far = np.vstack([encoded, encoded * 40.0, -encoded])
    np.testing.assert_allclose(
        forest.score_encoded(far),
        -forest.forest_.score_samples(far),
        rtol=1e-12,
        atol=0,
    )
