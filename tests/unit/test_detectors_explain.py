"""Explanations of auto_od scores: the planted feature ranks first, faithfully."""

import functools

import numpy as np
import pandas as pd
import pytest

from detectors import Contribution, FeatureKind, Status, explain_block, train_model

FEATURES = ("age", "hours", "income", "sector", "region")

# One value per feature, far from what training saw.
PLANTED = {
    "age": 150,
    "hours": 40.0 + 8.0 * 6,
    "income": float(np.exp(10.0 - 0.5 * 5)),
    "sector": "space",
    "region": "zz",
}


def _frame(seed, rows):
    rng = np.random.default_rng(seed)
    return pd.DataFrame(
        {
            "age": rng.integers(18, 80, rows),
            "hours": rng.normal(40, 8, rows),
            "income": rng.lognormal(10, 0.5, rows),
            "sector": rng.choice(
                ["private", "public", "self"], rows, p=[0.7, 0.2, 0.1]
            ),
            "region": rng.choice(list("abcdefgh"), rows),
        }
    )


def _typical_rows(model_version, seed, count):
    """Rows drawn like training whose score is below the calibration median."""
    pool = _frame(seed + 1000, 20 * count)
    scores = model_version.score_block(pool, learn=False)
    typical = pool[scores <= np.median(model_version.calibration_scores)]
    return typical.head(count).to_dict("records")


@functools.cache
def _trained(seed):
    return train_model(_frame(seed, 2000), model="census", version=1, seed=seed)


@pytest.fixture
def trained():
    return _trained(0)


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
@pytest.mark.parametrize("feature", FEATURES)
def test_planted_feature_ranks_first(seed, feature):
    model_version = _trained(seed)
    rows = [
        {**row, feature: PLANTED[feature]}
        for row in _typical_rows(model_version, seed, 10)
    ]
    explained = model_version.explain_block(rows, top=3)
    firsts = [contributions[0].feature for contributions in explained]
    assert firsts == [feature] * len(rows)


def test_numeric_contribution_fields(trained):
    row = {
        "age": 150,
        "hours": 40.0,
        "income": 22000.0,
        "sector": "private",
        "region": "a",
    }
    [[first]] = trained.explain_block([row], top=1)
    age = trained.profile["age"]
    assert first.feature == "age"
    assert first.kind is FeatureKind.NUMERIC
    assert first.status is Status.ABOVE_MAX
    assert first.value == 150.0
    assert (first.training_min, first.training_max) == (age.min, age.max)
    assert first.training_p1 == age.quantiles["p1"]
    assert first.training_p99 == age.quantiles["p99"]
    assert first.training_categories == ()


def test_categorical_contribution_fields(trained):
    row = {
        "age": 40,
        "hours": 40.0,
        "income": 22000.0,
        "sector": "space",
        "region": "a",
    }
    [[first]] = trained.explain_block([row], top=1)
    assert first.feature == "sector"
    assert first.kind is FeatureKind.CATEGORICAL
    assert first.status is Status.UNSEEN_CATEGORY
    assert first.value == "space"
    assert [key for key, _ in first.training_categories] == [
        "private",
        "public",
        "self",
    ]
    assert first.training_categories[0][1] == pytest.approx(0.7, abs=0.03)
    assert first.training_min is None


def test_contribution_is_score_drop(trained):
    """Replacing the feature by its typical value lowers the score by that much."""
    rows = _typical_rows(trained, 0, 5)
    rows = [{**row, "hours": PLANTED["hours"]} for row in rows]
    explained = trained.explain_block(rows, top=5)
    scores = trained.score_block(rows, learn=False)
    median = trained.profile["hours"].quantiles["p50"]
    typical = trained.score_block(
        [{**row, "hours": median} for row in rows], learn=False
    )
    for contributions, score, lowered in zip(explained, scores, typical, strict=True):
        hours = next(c for c in contributions if c.feature == "hours")
        assert hours.contribution == pytest.approx(score - lowered, abs=1e-9)


def test_shares_of_positive_contributions(trained):
    rows = [{**row, "region": "zz"} for row in _typical_rows(trained, 1, 5)]
    for contributions in trained.explain_block(rows, top=len(FEATURES)):
        positive = [c for c in contributions if c.contribution > 0]
        assert sum(c.share for c in positive) == pytest.approx(1.0)
        assert all(c.share == 0.0 for c in contributions if c.contribution <= 0)
        assert all(0.0 <= c.share <= 1.0 for c in contributions)


def test_sorted_largest_first(trained):
    rows = _typical_rows(trained, 2, 5)
    for contributions in trained.explain_block(rows, top=len(FEATURES)):
        drops = [c.contribution for c in contributions]
        assert drops == sorted(drops, reverse=True)
        assert sorted(c.feature for c in contributions) == sorted(FEATURES)


def test_rows_selects_and_orders(trained):
    rows = _typical_rows(trained, 3, 4)
    rows[2] = {**rows[2], "age": 150}
    rows[0] = {**rows[0], "sector": "space"}
    explained = trained.explain_block(rows, rows=[2, 0], top=1)
    assert [contributions[0].feature for contributions in explained] == [
        "age",
        "sector",
    ]


def test_same_as_whole_block(trained):
    rows = _typical_rows(trained, 4, 6)
    whole = trained.explain_block(rows, top=2)
    picked = trained.explain_block(rows, rows=[4, 1], top=2)
    assert picked == [whole[4], whole[1]]


def test_does_not_learn(trained):
    rows = _typical_rows(trained, 5, 300)
    before = trained.score_block(rows, learn=False)
    trained.explain_block(rows)
    np.testing.assert_array_equal(trained.score_block(rows, learn=False), before)


def test_missing_value_reported(trained):
    row = {
        "age": None,
        "hours": 40.0,
        "income": 22000.0,
        "sector": "private",
        "region": "a",
    }
    [contributions] = trained.explain_block([row], top=len(FEATURES))
    age = next(c for c in contributions if c.feature == "age")
    assert age.status is Status.MISSING
    assert age.value is None


def test_accepts_block_check(trained):
    rows = _typical_rows(trained, 6, 3)
    check = trained.check_block(rows)
    assert explain_block(trained.detector, check, top=2) == trained.explain_block(
        rows, top=2
    )


def test_top_larger_than_features(trained):
    [contributions] = trained.explain_block(_typical_rows(trained, 7, 1), top=50)
    assert len(contributions) == len(FEATURES)


@pytest.mark.parametrize("top", [0, -1, 1.5, True])
def test_invalid_top_rejected(trained, top):
    with pytest.raises(ValueError, match="top: expected a whole number"):
        trained.explain_block(_typical_rows(trained, 8, 1), top=top)


def test_row_out_of_range_rejected(trained):
    with pytest.raises(IndexError, match="expected positions from 0 to 1, got \\[5\\]"):
        trained.explain_block(_typical_rows(trained, 9, 2), rows=[0, 5])


def test_to_dict_and_describe(trained):
    row = {
        "age": 150,
        "hours": 40.0,
        "income": 22000.0,
        "sector": "private",
        "region": "a",
    }
    [[first]] = trained.explain_block([row], top=1)
    data = first.to_dict()
    assert data["feature"] == "age"
    assert data["kind"] == "numeric"
    assert data["status"] == "above_max"
    assert first.describe().startswith("age = 150 (above_max): +")


def test_describe_categorical():
    contribution = Contribution(
        "sector",
        FeatureKind.CATEGORICAL,
        Status.UNSEEN_CATEGORY,
        "space",
        1.0,
        0.75,
        training_categories=(("private", 0.7), ("public", 0.2)),
    )
    assert contribution.describe() == (
        "sector = space (unseen_category): +1, 75 % of the raise; training most "
        "often private (70 %), public (20 %)"
    )
