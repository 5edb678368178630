"""Training profile: statistics, JSON round trip and bad training data."""

import json
import logging
import math

import numpy as np
import pandas as pd
import pytest

from detectors import (
    EmptyTrainingDataError,
    FeatureKind,
    InfiniteValuesError,
    InvalidKindError,
    MixedTypesError,
    Profile,
    TrainingDataError,
    UnknownColumnError,
    build_profile,
    check_block,
    train_model,
)


@pytest.fixture
def frame():
    return pd.DataFrame(
        {
            "age": [20, 30, 40, 50, None],
            "city": ["Oslo", "Oslo", "Rome", None, "Oslo"],
            "member": [True, False, True, True, False],
            "label": ["a", "b", "a", "b", "a"],
        }
    )


def test_numeric_statistics(frame):
    age = build_profile(frame)["age"]
    assert age.kind is FeatureKind.NUMERIC
    assert age.count == 4
    assert age.missing_share == 0.2
    assert (age.min, age.max, age.mean) == (20.0, 50.0, 35.0)
    assert age.std == pytest.approx(np.std([20, 30, 40, 50], ddof=1))
    assert set(age.quantiles) >= {"p1", "p5", "p25", "p50", "p75", "p95", "p99"}
    assert age.quantiles["p50"] == 35.0


def test_categorical_counts_most_frequent_first(frame):
    city = build_profile(frame)["city"]
    assert city.kind is FeatureKind.CATEGORICAL
    assert city.categories == {"Oslo": 3, "Rome": 1}
    assert city.category_share("Oslo") == 0.75
    assert city.missing_share == 0.2


def test_bool_column_is_categorical(frame):
    member = build_profile(frame)["member"]
    assert member.kind is FeatureKind.CATEGORICAL
    assert member.categories == {"True": 3, "False": 2}


def test_target_and_excluded_not_features(frame):
    profile = build_profile(frame, target=["label"], exclude=["member"])
    assert profile.features == ("age", "city")
    assert profile.target == ("label",)
    assert profile.excluded == ("member",)


def test_target_may_be_one_string(frame):
    assert build_profile(frame, target="label").target == ("label",)


def test_kind_override_categorical(frame):
    profile = build_profile(frame, kinds={"age": "categorical"})
    assert profile["age"].kind is FeatureKind.CATEGORICAL
    assert profile["age"].categories == {"20": 1, "30": 1, "40": 1, "50": 1}


def test_json_round_trip_exact(frame):
    frame = frame.assign(ratio=[0.1, 1 / 3, 2 / 3, 1e-300, math.pi], flat=7)
    profile = build_profile(frame, target="label")
    text = profile.to_json()
    assert Profile.from_json(text) == profile
    assert Profile.from_json(text).to_json() == text
    assert json.loads(text)["features"][0]["name"] == "age"


def test_empty_frame_rejected():
    with pytest.raises(EmptyTrainingDataError, match="at least one training row"):
        build_profile(pd.DataFrame({"age": []}))


def test_no_feature_left_rejected(frame):
    with pytest.raises(EmptyTrainingDataError, match="at least one feature column"):
        build_profile(frame, target=["label"], exclude=["age", "city", "member"])


@pytest.mark.parametrize("role", ["target", "exclude"])
def test_unknown_column_rejected(frame, role):
    with pytest.raises(UnknownColumnError, match=r"\['income'\] not found.*available"):
        build_profile(frame, **{role: ["income"]})


def test_unknown_kinds_column_rejected(frame):
    with pytest.raises(UnknownColumnError, match="kinds column"):
        build_profile(frame, kinds={"height": "numeric"})


def test_infinite_values_rejected_with_count():
    frame = pd.DataFrame({"x": [1.0, math.inf, -math.inf, math.inf]})
    with pytest.raises(InfiniteValuesError, match=r"'x'.*2 \+inf and 1 -inf"):
        build_profile(frame)


def test_mixed_types_name_column_and_types():
    frame = pd.DataFrame({"zip": [1234, "N/A", 5678]})
    with pytest.raises(MixedTypesError, match=r"'zip'.*number \(2 rows.*str \(1 row,"):
        build_profile(frame)


def test_mixed_numbers_and_bools_rejected():
    with pytest.raises(MixedTypesError, match="bool"):
        build_profile(pd.DataFrame({"flag": [1, True, 0]}))


def test_unsupported_values_rejected():
    with pytest.raises(MixedTypesError, match="list"):
        build_profile(pd.DataFrame({"tags": [["a"], ["b"]]}))


def test_mixed_column_accepted_as_categorical():
    profile = build_profile(
        pd.DataFrame({"zip": [1234, "N/A"]}), kinds={"zip": "categorical"}
    )
    assert profile["zip"].categories == {"1234": 1, "N/A": 1}


def test_invalid_kind_rejected(frame):
    with pytest.raises(InvalidKindError, match="expected one of"):
        build_profile(frame, kinds={"age": "ordinal"})


def test_numeric_kind_on_strings_rejected(frame):
    with pytest.raises(InvalidKindError, match="'city' cannot be numeric"):
        build_profile(frame, kinds={"city": "numeric"})


def test_duplicate_columns_rejected():
    frame = pd.DataFrame([[1, 2]], columns=["a", "a"])
    with pytest.raises(TrainingDataError, match="duplicates"):
        build_profile(frame)


def test_not_a_frame_rejected():
    with pytest.raises(TypeError, match="DataFrame"):
        build_profile([{"a": 1}])


def test_all_missing_column_kept_and_flagged(caplog):
    frame = pd.DataFrame({"x": [1.0, 2.0, 3.0], "empty": [None, None, None]})
    with caplog.at_level(logging.WARNING):
        profile = build_profile(frame)
    assert profile["empty"].flags == ("all_missing",)
    assert profile["empty"].count == 0
    assert "'empty' is all_missing" in caplog.text


def test_constant_column_kept_and_flagged():
    profile = build_profile(pd.DataFrame({"k": [3, 3, 3], "c": ["a", "a", "a"]}))
    assert profile["k"].flags == ("constant",)
    assert profile["c"].flags == ("constant",)


def test_train_model_with_flagged_columns():
    rng = np.random.default_rng(1)
    frame = pd.DataFrame(
        {
            "x": rng.normal(size=300),
            "empty": [np.nan] * 300,
            "flat": [5.0] * 300,
            "tag": ["only"] * 300,
        }
    )
    mv = train_model(frame, model="m", version=1)
    scores = mv.score_block([{"x": 0.1, "empty": 2.0, "flat": 9.0, "tag": "other"}])
    assert np.isfinite(scores).all()
    statuses = check_block(mv.profile, [{"flat": 9.0, "tag": "other"}]).statuses
    assert statuses.loc[0, "flat"] == "above_max"
    assert statuses.loc[0, "tag"] == "unseen_category"


def test_train_model_single_row():
    mv = train_model(pd.DataFrame({"x": [1.0], "c": ["a"]}), model="m", version=1)
    assert np.isfinite(mv.score_block([{"x": 1.0, "c": "a"}])).all()
