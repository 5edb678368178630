"""Range checks: every status, type rules, block against one-row checks."""

import math

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from detectors import Status, build_profile, check_block, check_record
from detectors.values import BOOL as CLASS_BOOL
from detectors.values import NUMBER as CLASS_NUMBER
from detectors.values import STRING as CLASS_STRING
from detectors.values import (
    _classify_objects,
    as_object_array,
    category_key,
    category_keys,
    classify_column,
)


@pytest.fixture(scope="module")
def profile():
    frame = pd.DataFrame(
        {
            "age": [20, 35, 50, 65],
            "income": [1.5, 2.5, None, 4.0],
            "sex": ["F", "M", "F", None],
            "grade": [1, 2, 2, 3],
        }
    )
    return build_profile(frame, kinds={"grade": "categorical"})


CASES = [
    ("age", 35, Status.OK),
    ("age", 20, Status.OK),
    ("age", 65.0, Status.OK),
    ("age", 19.999, Status.BELOW_MIN),
    ("age", 65.001, Status.ABOVE_MAX),
    ("age", math.inf, Status.ABOVE_MAX),
    ("age", -math.inf, Status.BELOW_MIN),
    ("age", 10**400, Status.ABOVE_MAX),
    ("age", -(10**400), Status.BELOW_MIN),
    ("age", None, Status.MISSING),
    ("age", math.nan, Status.MISSING),
    ("age", "39", Status.WRONG_TYPE),
    ("age", True, Status.WRONG_TYPE),
    ("age", [39], Status.WRONG_TYPE),
    ("age", {"value": 39}, Status.WRONG_TYPE),
    ("sex", "F", Status.OK),
    ("sex", "X", Status.UNSEEN_CATEGORY),
    ("sex", 1, Status.UNSEEN_CATEGORY),
    ("sex", None, Status.MISSING),
    ("sex", ["F"], Status.WRONG_TYPE),
    ("grade", 2, Status.OK),
    ("grade", "2", Status.OK),
    ("grade", 2.0, Status.OK),
    ("grade", 7, Status.UNSEEN_CATEGORY),
    ("grade", {"grade": 2}, Status.WRONG_TYPE),
]


@pytest.mark.parametrize(("feature", "value", "expected"), CASES)
def test_check_record_status(profile, feature, value, expected):
    assert check_record(profile, {feature: value})[feature] == expected


@pytest.mark.parametrize(("feature", "value", "expected"), CASES)
def test_check_block_status(profile, feature, value, expected):
    check = check_block(profile, [{feature: value}])
    assert check.statuses.loc[0, feature] == expected


def test_check_block_absent_feature_missing(profile):
    check = check_block(profile, [{}])
    assert check.statuses.iloc[0].tolist() == ["missing"] * 4


def test_check_block_reports_extra_per_row(profile):
    check = check_block(profile, [{"age": 30, "city": "Oslo", "zip": None}, {"x": 1}])
    assert check.extra == [["city"], ["x"]]


def test_check_block_frame_extra_skips_target():
    frame = pd.DataFrame({"age": [20, 30], "label": ["a", "b"]})
    profile = build_profile(frame, target=["label"])
    scoring = pd.DataFrame({"label": ["a", "b"], "age": [25, 26], "id": [7, None]})
    check = check_block(profile, scoring)
    assert check.extra == [["id"], []]


def test_check_block_frame_column_order_irrelevant(profile):
    frame = pd.DataFrame({"sex": ["F", "Z"], "grade": [1, 9], "age": [30, 99]})
    reordered = frame[["age", "grade", "sex"]]
    left = check_block(profile, frame).statuses
    right = check_block(profile, reordered).statuses
    pd.testing.assert_frame_equal(left, right)


def test_check_block_typed_columns(profile):
    frame = pd.DataFrame(
        {
            "age": pd.Series([10, 30, 70], dtype="int64"),
            "income": pd.Series([True, False, True]),
            "sex": pd.Series(["F", "Q", None], dtype="string"),
            "grade": pd.Series([1.0, 4.0, np.nan]),
        }
    )
    statuses = check_block(profile, frame).statuses
    assert statuses["age"].tolist() == ["below_min", "ok", "above_max"]
    assert statuses["income"].tolist() == ["wrong_type"] * 3
    assert statuses["sex"].tolist() == ["ok", "unseen_category", "missing"]
    assert statuses["grade"].tolist() == ["ok", "unseen_category", "missing"]


def test_check_block_statuses_are_status_values(profile):
    statuses = check_block(profile, [{"age": 30}]).statuses
    assert set(statuses.columns) == set(profile.features)
    assert Status(statuses.loc[0, "age"]) is Status.OK


def test_check_block_rejects_single_mapping(profile):
    with pytest.raises(TypeError, match="wrap one event in a list"):
        check_block(profile, {"age": 30})


def test_check_constant_column_rejects_other_values():
    profile = build_profile(pd.DataFrame({"k": [5, 5, 5], "c": ["a", "a", "a"]}))
    statuses = check_block(profile, [{"k": 5, "c": "a"}, {"k": 6, "c": "b"}]).statuses
    assert statuses.loc[0].tolist() == ["ok", "ok"]
    assert statuses.loc[1].tolist() == ["above_max", "unseen_category"]


def test_check_all_missing_numeric_column():
    profile = build_profile(pd.DataFrame({"x": [np.nan, np.nan], "y": [1.0, 2.0]}))
    check = check_block(profile, [{"x": 3.0}, {"x": None}])
    assert check.statuses["x"].tolist() == ["below_min", "missing"]
    assert check_record(profile, {"x": 3.0})["x"] is Status.BELOW_MIN


# Values a JSON decoder can produce, plus the numeric edge cases.
json_values = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(10**30), max_value=10**30),
    st.sampled_from([2**53 + 1, 10**400, -(10**400), 0, 20, 65, -1]),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from(["F", "M", "X", "39", "", "2", "1.5"]),
    st.lists(st.integers(), max_size=2),
    st.dictionaries(st.text(max_size=2), st.integers(), max_size=1),
)
records = st.lists(
    st.dictionaries(
        st.sampled_from(["age", "income", "sex", "grade", "extra"]), json_values
    ),
    min_size=1,
    max_size=30,
)


@settings(max_examples=300, deadline=None)
@given(rows=records)
def test_check_block_equals_check_record(profile, rows):
    statuses = check_block(profile, rows).statuses
    for position, row in enumerate(rows):
        expected = {
            name: str(status) for name, status in check_record(profile, row).items()
        }
        assert statuses.iloc[position].to_dict() == expected


def test_check_block_duplicate_columns_rejected(profile):
    frame = pd.DataFrame([[30, 40]], columns=["age", "age"])
    with pytest.raises(ValueError, match=r"duplicates \['age'\]"):
        check_block(profile, frame)


plain_columns = st.one_of(
    st.lists(st.one_of(st.none(), st.integers(), st.floats()), max_size=20),
    st.lists(st.one_of(st.none(), st.text(max_size=3)), max_size=20),
    st.lists(st.sampled_from([None, 1, 2.5, 10**400, -(10**400), True]), max_size=5),
)


@settings(max_examples=300, deadline=None)
@given(values=plain_columns)
def test_classify_list_equals_object_path(values):
    classes, numbers = classify_column(values)
    expected_classes, expected_numbers = _classify_objects(as_object_array(values))
    assert classes.tolist() == expected_classes.tolist()
    np.testing.assert_array_equal(numbers, expected_numbers)


@settings(max_examples=200, deadline=None)
@given(
    ages=st.lists(st.one_of(st.none(), st.integers(0, 99), st.floats()), min_size=1),
    sexes=st.lists(st.one_of(st.none(), st.sampled_from(["F", "M", "X"]))),
)
def test_check_block_plain_columns_equal_records(profile, ages, sexes):
    rows = [{"age": age} for age in ages]
    for row, sex in zip(rows, sexes, strict=False):
        row["sex"] = sex
    statuses = check_block(profile, rows).statuses
    for position, row in enumerate(rows):
        expected = {
            name: str(status) for name, status in check_record(profile, row).items()
        }
        assert statuses.iloc[position].to_dict() == expected


@settings(max_examples=200, deadline=None)
@given(values=st.lists(st.one_of(json_values, st.text(max_size=2)), max_size=12))
def test_category_keys_equal_one_by_one(values):
    classes, _ = classify_column(values)
    keys = category_keys(as_object_array(values), classes)
    usable = (CLASS_NUMBER, CLASS_BOOL, CLASS_STRING)
    expected = [
        category_key(value) if kind in usable else None
        for value, kind in zip(values, classes.tolist(), strict=True)
    ]
    assert keys.tolist() == expected
