"""Custom metrics, their configuration files, and retuning a stored version."""

import hashlib
import json
import pickle

import numpy as np
import pandas as pd
import pytest
from sklearn.compose import make_column_transformer
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import LinearRegression, LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import OneHotEncoder

from detectors import (
    MetricConfigError,
    build_metrics,
    build_profile,
    load_metric_configs,
    load_model,
    parse_metric_configs,
    set_metrics,
    set_target_alert_rate,
    threshold_for_rate,
    train_model,
)
from detectors.metrics import block_frame, dump_metric_configs, evaluate_metrics
from schemas import MetricConfig, MetricResult, Operator

HERE = "tests.unit.test_detectors_metrics"

SEEN_FRAMES = []


def hours_per_age(frame):
    """Scorer used by the tests: fails on rows whose age is 0."""
    SEEN_FRAMES.append(frame)
    hours = frame["hours"].astype(float)
    age = frame["age"].astype(float)
    if (age == 0).any():
        raise ZeroDivisionError("age is 0")
    return hours / age


def wrong_length(frame):
    return [1.0, 2.0, 3.0]


def nan_for_sector_self(frame):
    return np.where(frame["sector"] == "self", np.nan, 1.0)


def always_raises(frame):
    raise RuntimeError("x" * 2000)


NOT_CALLABLE = 42


@pytest.fixture(scope="module")
def frame():
    rng = np.random.default_rng(0)
    rows = 600
    return pd.DataFrame(
        {
            "age": rng.integers(18, 80, rows),
            "hours": rng.normal(40, 8, rows),
            "sector": rng.choice(["private", "public", "self"], rows),
            "grade": rng.choice([1, 2, 3], rows).astype(str),
        }
    )


@pytest.fixture(scope="module")
def profile(frame):
    return build_profile(frame)


def _config(**fields):
    return parse_metric_configs([{"operator": ">", "threshold": 0.0, **fields}])[0]


def _evaluate(profile, config, rows):
    [metric] = build_metrics([config], profile)
    return evaluate_metrics([metric], profile, rows)[config.name]


# Configuration


def test_parse_feature_and_scorers():
    configs = parse_metric_configs(
        [
            {"name": "adult", "feature": "age", "operator": ">=", "threshold": 18},
            {"name": "ratio", "scorer": "pkg.mod:fn", "operator": "<", "threshold": 2},
            {
                "name": "model",
                "scorer": "file:/m.pkl",
                "operator": "==",
                "threshold": 1,
            },
        ]
    )
    assert configs[0] == MetricConfig(
        name="adult", feature="age", operator=Operator.GE, threshold=18.0
    )
    assert configs[1].scorer == "pkg.mod:fn"
    assert configs[2].scorer == "file:/m.pkl"
    assert isinstance(configs[0].threshold, float)


@pytest.mark.parametrize(
    ("document", "message"),
    [
        ({"name": "a"}, "metrics: expected a JSON array of metric objects, got object"),
        ([3], r"metrics\[0\]: expected a JSON object with name, feature, scorer"),
        (
            [{"feature": "age", "operator": ">", "threshold": 1}],
            r"metrics\[0\], field 'name': expected a non-blank metric name, got null",
        ),
        (
            [{"name": " ", "feature": "age", "operator": ">", "threshold": 1}],
            "field 'name': expected a non-blank metric name, got string ' '",
        ),
        (
            [{"name": "auto_od", "feature": "age", "operator": ">", "threshold": 1}],
            "field 'name': expected a name other than range, auto_od",
        ),
        (
            [{"name": "m", "feature": "age", "scorer": "a:b", "operator": ">"}],
            "metrics\\[0\\] 'm': expected exactly one of the fields 'feature' and "
            "'scorer', got both",
        ),
        (
            [{"name": "m", "operator": ">", "threshold": 1}],
            "expected exactly one of the fields 'feature' and 'scorer', got neither",
        ),
        (
            [{"name": "m", "feature": "age", "operator": "=>", "threshold": 1}],
            "metrics\\[0\\] 'm', field 'operator': expected one of '<', '<=', '>', "
            "'>=', '==', '!=', got string '=>'",
        ),
        (
            [{"name": "m", "feature": "age", "operator": ">", "threshold": "1"}],
            "field 'threshold': expected a finite number, got string '1'",
        ),
        (
            [{"name": "m", "feature": "age", "operator": ">", "threshold": True}],
            "field 'threshold': expected a finite number, got boolean True",
        ),
        (
            [
                {
                    "name": "m",
                    "feature": "age",
                    "operator": ">",
                    "threshold": float("nan"),
                }
            ],
            "field 'threshold': expected a finite number, got nan",
        ),
        (
            [{"name": "m", "scorer": "module_only", "operator": ">", "threshold": 1}],
            "field 'scorer': expected an import path such as package.module:name",
        ),
        (
            [{"name": "m", "scorer": "file: ", "operator": ">", "threshold": 1}],
            "field 'scorer': expected an import path",
        ),
        (
            [{"name": "m", "feature": "age", "operator": ">", "treshold": 1}],
            "expected only the fields name, feature, scorer, operator, threshold, "
            "got \\['treshold'\\]",
        ),
    ],
)
def test_parse_rejects(document, message):
    with pytest.raises(MetricConfigError, match=message):
        parse_metric_configs(document)


def test_parse_rejects_duplicate_names():
    metric = {"name": "m", "feature": "age", "operator": ">", "threshold": 1}
    with pytest.raises(MetricConfigError, match="got 'm' a second time"):
        parse_metric_configs([metric, metric])


def test_load_from_file(tmp_path):
    path = tmp_path / "metrics.json"
    path.write_text(
        json.dumps(
            [{"name": "adult", "feature": "age", "operator": ">=", "threshold": 18}]
        )
    )
    [config] = load_metric_configs(path)
    assert config.name == "adult"


def test_load_names_file_in_errors(tmp_path):
    path = tmp_path / "metrics.json"
    path.write_text(json.dumps([{"name": "adult", "feature": "age"}]))
    with pytest.raises(
        MetricConfigError, match=f"{path}\\[0\\] 'adult', field 'operator'"
    ):
        load_metric_configs(path)


def test_load_invalid_json(tmp_path):
    path = tmp_path / "metrics.json"
    path.write_text("[{")
    with pytest.raises(MetricConfigError, match="fails to read"):
        load_metric_configs(path)


def test_load_missing_file(tmp_path):
    with pytest.raises(MetricConfigError, match="not found"):
        load_metric_configs(tmp_path / "absent.json")


def test_dump_round_trip():
    configs = parse_metric_configs(
        [
            {"name": "adult", "feature": "age", "operator": ">=", "threshold": 18},
            {
                "name": "model",
                "scorer": "file:/m.pkl",
                "operator": "<",
                "threshold": 0.5,
            },
        ]
    )
    assert parse_metric_configs(json.loads(dump_metric_configs(configs))) == configs


# Feature rules


@pytest.mark.parametrize(
    ("operator", "expected"),
    [
        ("<", [True, False, False]),
        ("<=", [True, True, False]),
        (">", [False, False, True]),
        (">=", [False, True, True]),
        ("==", [False, True, False]),
        ("!=", [True, False, True]),
    ],
)
def test_numeric_rule_operators(profile, operator, expected):
    config = _config(name="m", feature="age", operator=operator, threshold=30)
    results = _evaluate(profile, config, [{"age": 20}, {"age": 30}, {"age": 40.5}])
    assert results.passed.tolist() == expected
    assert results.values.tolist() == [20.0, 30.0, 40.5]
    assert results.errors.tolist() == [None, None, None]


def test_numeric_rule_errors_per_row(profile):
    config = _config(name="m", feature="age", threshold=30)
    rows = [
        {"age": 40},
        {"age": None},
        {},
        {"age": "39"},
        {"age": 10**400},
        {"age": True},
    ]
    results = _evaluate(profile, config, rows)
    assert results.passed.tolist() == [True, False, False, False, False, False]
    assert results.values[0] == 40.0
    assert np.isnan(results.values[1:]).all()
    assert results.errors[0] is None
    assert results.errors[1] == "feature 'age' is missing"
    assert results.errors[2] == "feature 'age' is missing"
    assert results.errors[3] == "feature 'age': expected a number, got string '39'"
    assert "expected a finite number" in results.errors[4]
    assert results.errors[5] == "feature 'age': expected a number, got boolean True"


def test_categorical_rule_equality(profile):
    config = _config(name="m", feature="grade", operator="==", threshold=2)
    rows = [{"grade": "2"}, {"grade": 2}, {"grade": "3"}, {"grade": 2.0}]
    results = _evaluate(profile, config, rows)
    assert results.passed.tolist() == [True, True, False, True]
    assert results.values.tolist() == [2.0, 2.0, 3.0, 2.0]


def test_categorical_rule_not_equal(profile):
    config = _config(name="m", feature="grade", operator="!=", threshold=2)
    results = _evaluate(profile, config, [{"grade": "2"}, {"grade": "3"}])
    assert results.passed.tolist() == [False, True]


def test_categorical_rule_non_number_errors(profile):
    config = _config(name="m", feature="sector", operator="==", threshold=1)
    rows = [{"sector": "self"}, {"sector": None}, {"sector": True}, {"sector": [1]}]
    results = _evaluate(profile, config, rows)
    assert results.errors[0] == (
        "feature 'sector': category 'self' is not a number, so it cannot be compared "
        "with the threshold"
    )
    assert results.errors[1] == "feature 'sector' is missing"
    assert results.errors[2] is None
    assert results.values[2] == 1.0
    assert results.passed.tolist() == [False, False, True, False]
    assert "expected a number, string or boolean, got array" in results.errors[3]


def test_categorical_rule_order_rejected(profile):
    config = _config(name="m", feature="sector", operator="<", threshold=1)
    with pytest.raises(
        MetricConfigError,
        match="feature 'sector' is categorical, so expected operator '==' or '!=', "
        "got '<'",
    ):
        build_metrics([config], profile)


def test_unknown_feature_rejected(profile):
    config = _config(name="m", feature="salary")
    with pytest.raises(MetricConfigError, match="got 'salary'"):
        build_metrics([config], profile)


def test_unknown_feature_marks_rows_when_lenient(profile):
    config = _config(name="m", feature="salary")
    [metric] = build_metrics([config], profile, strict=False)
    results = evaluate_metrics([metric], profile, [{"age": 1}, {"age": 2}])["m"]
    assert results.passed.tolist() == [False, False]
    assert all("got 'salary'" in error for error in results.errors)


# Python callables


def test_callable_gets_block_frame(profile):
    SEEN_FRAMES.clear()
    config = _config(name="m", scorer=f"{HERE}:hours_per_age", threshold=1.0)
    rows = [
        {"age": 20, "hours": 40.0, "sector": "self", "grade": "1", "city": "Oslo"},
        {"hours": 10.0, "age": 40, "shift": 2},
    ]
    results = _evaluate(profile, config, rows)
    assert results.values.tolist() == [2.0, 0.25]
    assert results.passed.tolist() == [True, False]
    [seen] = SEEN_FRAMES
    assert list(seen.columns) == ["age", "hours", "sector", "grade", "city", "shift"]
    assert set(seen.dtypes) == {np.dtype(object)}
    assert seen.loc[0, "age"] == 20
    assert type(seen.loc[0, "age"]) is int
    assert seen.loc[1, "sector"] is None


def test_failing_rows_marked_alone(profile):
    config = _config(name="m", scorer=f"{HERE}:hours_per_age", threshold=1.0)
    rows = [{"age": 20 + i, "hours": 40.0} for i in range(100)]
    for position in (0, 37, 99):
        rows[position] = {"age": 0, "hours": 40.0}
    SEEN_FRAMES.clear()
    results = _evaluate(profile, config, rows)
    failed = np.flatnonzero(results.failed).tolist()
    assert failed == [0, 37, 99]
    assert results.errors[37] == "ZeroDivisionError: age is 0"
    assert not results.passed[[0, 37, 99]].any()
    expected = np.array([40.0 / row["age"] for row in rows if row["age"]])
    np.testing.assert_allclose(np.delete(results.values, failed), expected)
    # Halving finds three failing rows in far fewer calls than one per row.
    assert len(SEEN_FRAMES) < 60


def test_wrong_output_length_marks_rows(profile):
    config = _config(name="m", scorer=f"{HERE}:wrong_length")
    results = _evaluate(profile, config, [{"age": 1}] * 5)
    assert results.failed.all()
    assert results.errors[0] == (
        "ValueError: expected one number per row, 1 in all, got an output of shape (3,)"
    )


def test_nan_output_marks_row(profile):
    config = _config(name="m", scorer=f"{HERE}:nan_for_sector_self")
    results = _evaluate(profile, config, [{"sector": "self"}, {"sector": "public"}])
    assert results.errors.tolist() == [
        "scorer returned nan, expected a finite number",
        None,
    ]
    assert results.passed.tolist() == [False, True]


def test_error_message_truncated(profile):
    config = _config(name="m", scorer=f"{HERE}:always_raises")
    results = _evaluate(profile, config, [{"age": 1}] * 3)
    assert results.failed.all()
    assert len(results.errors[0]) == 500
    assert results.errors[0].startswith("RuntimeError: xxx")
    assert results.errors[0].endswith("...")


def test_import_failure_rejected(profile):
    config = _config(name="m", scorer="no_such_module_here:fn")
    with pytest.raises(
        MetricConfigError, match="importing module 'no_such_module_here'"
    ):
        build_metrics([config], profile)


def test_missing_attribute_rejected(profile):
    config = _config(name="m", scorer=f"{HERE}:no_such_function")
    with pytest.raises(MetricConfigError, match="expected 'no_such_function' in"):
        build_metrics([config], profile)


def test_not_callable_rejected(profile):
    config = _config(name="m", scorer=f"{HERE}:NOT_CALLABLE")
    with pytest.raises(
        MetricConfigError, match="expected a callable or a fitted model"
    ):
        build_metrics([config], profile)


def test_import_failure_marks_rows_when_lenient(profile):
    config = _config(name="m", scorer="no_such_module_here:fn")
    [metric] = build_metrics([config], profile, strict=False)
    results = evaluate_metrics([metric], profile, [{"age": 1}])["m"]
    assert results.failed.tolist() == [True]
    assert "importing module" in results.errors[0]


# scikit-learn models


def _save(model, tmp_path, name="model.pkl"):
    path = tmp_path / name
    path.write_bytes(pickle.dumps(model))
    return f"file:{path}"


def test_model_decision_function(frame, profile, tmp_path):
    target = (frame["hours"] > 40).astype(int)
    model = LogisticRegression().fit(frame[["age", "hours"]], target)
    config = _config(name="m", scorer=_save(model, tmp_path), threshold=0.0)
    rows = frame.head(20)
    results = _evaluate(profile, config, rows)
    expected = model.decision_function(rows[["age", "hours"]])
    np.testing.assert_allclose(results.values, expected)
    assert results.passed.tolist() == (expected > 0).tolist()


def test_model_predict_proba(frame, profile, tmp_path):
    target = (frame["hours"] > 40).astype(int)
    model = RandomForestClassifier(n_estimators=5, random_state=0)
    model.fit(frame[["age", "hours"]], target)
    config = _config(name="m", scorer=_save(model, tmp_path), threshold=0.5)
    rows = frame.head(20)
    results = _evaluate(profile, config, rows)
    expected = model.predict_proba(rows[["age", "hours"]])[:, 1]
    np.testing.assert_allclose(results.values, expected)


def test_model_predict(frame, profile, tmp_path):
    model = LinearRegression().fit(frame[["age"]], frame["hours"])
    config = _config(name="m", scorer=_save(model, tmp_path), threshold=40.0)
    rows = frame.head(20).to_dict("records")
    results = _evaluate(profile, config, rows)
    np.testing.assert_allclose(results.values, model.predict(frame.head(20)[["age"]]))


def test_model_with_categorical_pipeline(frame, profile, tmp_path):
    encoder = make_column_transformer(
        (OneHotEncoder(handle_unknown="ignore"), ["sector"]), remainder="passthrough"
    )
    model = make_pipeline(encoder, LogisticRegression())
    columns = ["age", "hours", "sector"]
    model.fit(frame[columns], (frame["sector"] == "self").astype(int))
    config = _config(name="m", scorer=_save(model, tmp_path), threshold=0.0)
    rows = frame.head(10).to_dict("records")
    results = _evaluate(profile, config, rows)
    np.testing.assert_allclose(
        results.values, model.decision_function(frame.head(10)[columns])
    )


def test_model_without_names_gets_training_order(tmp_path):
    training = pd.DataFrame({"b": np.arange(50.0), "a": np.arange(50.0) * 10})
    profile = build_profile(training)
    model = LinearRegression().fit(training.to_numpy(), np.arange(50.0) * 2 + 1)
    config = _config(name="m", scorer=_save(model, tmp_path))
    results = _evaluate(profile, config, [{"a": 30.0, "b": 3.0}])
    assert results.values[0] == pytest.approx(model.predict([[3.0, 30.0]])[0])


def test_model_missing_value_marks_row(frame, profile, tmp_path):
    model = LinearRegression().fit(frame[["age"]], frame["hours"])
    config = _config(name="m", scorer=_save(model, tmp_path))
    results = _evaluate(profile, config, [{"age": 30}, {"age": None}, {"age": "x"}])
    assert results.failed.tolist() == [False, True, True]
    assert results.errors[1].startswith("ValueError: ")


def test_model_file_missing_rejected(profile, tmp_path):
    config = _config(name="m", scorer=f"file:{tmp_path / 'absent.pkl'}")
    with pytest.raises(MetricConfigError, match="absent.pkl' not found"):
        build_metrics([config], profile)


def test_model_file_damaged_rejected(profile, tmp_path):
    path = tmp_path / "model.pkl"
    path.write_bytes(b"not a pickle")
    with pytest.raises(MetricConfigError, match="fails to load"):
        build_metrics([_config(name="m", scorer=f"file:{path}")], profile)


# Results


def test_results_as_records(profile):
    config = _config(name="m", feature="age", operator=">=", threshold=18)
    results = _evaluate(profile, config, [{"age": 30}, {"age": None}])
    first, second = results.results()
    assert first == MetricResult(
        value=30.0, threshold=18.0, operator=Operator.GE, passed=True
    )
    assert second.value is None
    assert second.passed is False
    assert second.error == "feature 'age' is missing"
    # The records pass the schema's validation.
    for record in (first, second):
        assert MetricResult.from_json(record.to_json()) == record


def test_block_frame_from_dataframe(profile):
    data = pd.DataFrame({"extra": [1, 2], "age": [30, 40]}, index=[7, 9])
    block = block_frame(profile, data)
    assert list(block.columns) == ["age", "hours", "sector", "grade", "extra"]
    assert list(block.index) == [0, 1]
    assert set(block.dtypes) == {np.dtype(object)}
    assert block["hours"].isna().all()


def test_evaluate_without_metrics(profile):
    assert evaluate_metrics([], profile, [{"age": 1}]) == {}


# Model versions


@pytest.fixture(scope="module")
def trained(frame):
    metrics = parse_metric_configs(
        [{"name": "adult", "feature": "age", "operator": ">=", "threshold": 18}]
    )
    return train_model(frame, model="census", version=1, seed=0, metrics=metrics)


def test_train_model_checks_metrics(frame):
    bad = [_config(name="m", feature="salary")]
    with pytest.raises(MetricConfigError, match="got 'salary'"):
        train_model(frame.head(50), model="census", version=1, metrics=bad)


def test_model_version_evaluates_metrics(trained):
    results = trained.evaluate_metrics([{"age": 17}, {"age": 30}])
    assert list(results) == ["adult"]
    assert results["adult"].passed.tolist() == [False, True]


def test_metrics_survive_save(trained, tmp_path):
    trained.save(tmp_path)
    loaded = load_model(tmp_path, "census", 1)
    assert loaded.metrics == trained.metrics
    saved = json.loads((tmp_path / "census" / "1" / "metrics.json").read_text())
    assert saved == [
        {"name": "adult", "feature": "age", "operator": ">=", "threshold": 18.0}
    ]


def _manifest(tmp_path):
    return json.loads((tmp_path / "census" / "1" / "manifest.json").read_text())


def test_set_metrics_rewrites_file_and_manifest(trained, tmp_path):
    trained.save(tmp_path)
    before = _manifest(tmp_path)
    configs = [
        _config(name="long_week", feature="hours", operator=">", threshold=60),
        _config(name="ratio", scorer=f"{HERE}:hours_per_age", threshold=1.0),
    ]
    set_metrics(tmp_path, "census", 1, configs)
    after = _manifest(tmp_path)
    content = (tmp_path / "census" / "1" / "metrics.json").read_bytes()
    assert (
        after["files"]["metrics.json"]["sha256"] == hashlib.sha256(content).hexdigest()
    )
    assert after["files"]["metrics.json"] != before["files"]["metrics.json"]
    assert after["files"]["detector.pkl"] == before["files"]["detector.pkl"]
    assert after["created"] == before["created"]
    loaded = load_model(tmp_path, "census", 1)
    assert loaded.metrics == tuple(configs)
    results = loaded.evaluate_metrics([{"age": 20, "hours": 70.0}])
    assert results["long_week"].passed.tolist() == [True]
    assert results["ratio"].values.tolist() == [3.5]


def test_set_metrics_rejects_and_keeps_artifact(trained, tmp_path):
    trained.save(tmp_path)
    before = (tmp_path / "census" / "1" / "manifest.json").read_bytes()
    with pytest.raises(MetricConfigError, match="got 'salary'"):
        set_metrics(tmp_path, "census", 1, [_config(name="m", feature="salary")])
    assert (tmp_path / "census" / "1" / "manifest.json").read_bytes() == before
    assert load_model(tmp_path, "census", 1).metrics == trained.metrics


def test_set_metrics_leaves_no_staging(trained, tmp_path):
    trained.save(tmp_path)
    set_metrics(tmp_path, "census", 1, [])
    assert sorted(path.name for path in (tmp_path / "census").iterdir()) == ["1"]
    assert load_model(tmp_path, "census", 1).metrics == ()


# Threshold for a target alert rate


def test_training_threshold_from_rate(trained):
    expected = threshold_for_rate(trained.calibration_scores, 0.01)
    assert trained.threshold == expected


def test_threshold_for_rate_with_contamination(frame):
    dirty = train_model(frame, model="m", version=1, contamination=0.05)
    expected = threshold_for_rate(dirty.calibration_scores, 0.01, contamination=0.05)
    assert dirty.threshold == expected


@pytest.mark.parametrize("rate", [0, 1, -0.5, 2, True])
def test_threshold_for_rate_rejects_rate(rate):
    with pytest.raises(ValueError, match="target_alert_rate: expected a share"):
        threshold_for_rate([1.0, 2.0], rate)


def test_threshold_for_rate_rejects_empty_scores():
    with pytest.raises(ValueError, match="calibration_scores: expected a non-empty"):
        threshold_for_rate([], 0.01)


def test_set_target_alert_rate(trained, tmp_path):
    trained.save(tmp_path)
    threshold = set_target_alert_rate(tmp_path, "census", 1, 0.05)
    assert threshold == threshold_for_rate(trained.calibration_scores, 0.05)
    assert threshold < trained.threshold
    loaded = load_model(tmp_path, "census", 1)
    assert loaded.threshold == threshold
    assert loaded.target_alert_rate == 0.05
    manifest = _manifest(tmp_path)
    assert (manifest["threshold"], manifest["target_alert_rate"]) == (threshold, 0.05)
    directory = tmp_path / "census" / "1"
    calibration = json.loads((directory / "calibration.json").read_text())
    assert calibration["threshold"] == threshold
    assert calibration["scores"] == trained.calibration_scores.tolist()
    flagged = np.mean(loaded.calibration_scores > loaded.threshold)
    assert flagged == pytest.approx(0.05, abs=0.005)


def test_set_target_alert_rate_rejects_and_keeps(trained, tmp_path):
    trained.save(tmp_path)
    with pytest.raises(ValueError, match="target_alert_rate"):
        set_target_alert_rate(tmp_path, "census", 1, 1.5)
    assert load_model(tmp_path, "census", 1).threshold == trained.threshold
