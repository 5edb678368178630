"""Model versions: train, score, save, load and detect damaged artifacts."""

import json

import numpy as np
import pandas as pd
import pytest

from detectors import (
    ArtifactCorruptError,
    ArtifactFormatError,
    ArtifactMissingError,
    ChecksumMismatchError,
    load_model,
    train_model,
)


@pytest.fixture(scope="module")
def frame():
    rng = np.random.default_rng(0)
    rows = 2000
    return pd.DataFrame(
        {
            "age": rng.integers(18, 80, rows),
            "hours": rng.normal(40, 8, rows),
            "sector": rng.choice(
                ["private", "public", "self"], rows, p=[0.7, 0.2, 0.1]
            ),
            "income": rng.choice(["<=50K", ">50K"], rows),
        }
    )


@pytest.fixture(scope="module")
def trained(frame):
    return train_model(frame, model="census", version=1, target=["income"], seed=0)


def test_train_model_features_in_column_order(trained):
    assert trained.profile.features == ("age", "hours", "sector")


def test_score_frame_columns(trained, frame):
    out = trained.score_frame(frame.head(5), learn=False)
    assert list(out.columns) == [
        "score",
        "threshold",
        "is_outlier",
        "status_age",
        "status_hours",
        "status_sector",
    ]
    assert len(out) == 5


def test_score_block_flags_far_row(trained):
    scores = trained.score_block(
        [
            {"age": 40, "hours": 40.0, "sector": "private"},
            {"age": 200, "hours": 400.0, "sector": "space"},
        ],
        learn=False,
    )
    assert scores[0] <= trained.threshold
    assert scores[1] > trained.threshold


def test_save_load_same_scores(trained, frame, tmp_path):
    trained.save(tmp_path)
    loaded = load_model(tmp_path, "census", 1)
    assert loaded.profile == trained.profile
    assert loaded.threshold == trained.threshold
    expected = trained.score_block(frame.head(300), learn=False)
    np.testing.assert_array_equal(
        loaded.score_block(frame.head(300), learn=False), expected
    )


def test_saved_files_and_manifest(trained, tmp_path):
    trained.save(tmp_path)
    directory = tmp_path / "census" / "1"
    manifest = json.loads((directory / "manifest.json").read_text())
    assert sorted(manifest["files"]) == [
        "calibration.json",
        "detector.pkl",
        "metrics.json",
        "profile.json",
        "reference.json",
    ]
    assert manifest["artifact_format"] == 2
    assert manifest["training_rows"] == 2000
    assert manifest["oddwatch_version"]
    assert json.loads((directory / "profile.json").read_text())["rows"] == 2000


def test_save_refuses_existing_version(trained, tmp_path):
    trained.save(tmp_path)
    with pytest.raises(FileExistsError, match="overwrite=True"):
        trained.save(tmp_path)
    trained.save(tmp_path, overwrite=True)


def test_load_checksum_mismatch_names_file(trained, tmp_path):
    trained.save(tmp_path)
    path = tmp_path / "census" / "1" / "profile.json"
    path.write_text(path.read_text().replace('"rows": 2000', '"rows": 2001'))
    with pytest.raises(
        ChecksumMismatchError, match="profile.json.*expected sha256.*retrain"
    ):
        load_model(tmp_path, "census", 1)


def test_load_truncated_pickle(trained, tmp_path):
    trained.save(tmp_path)
    directory = tmp_path / "census" / "1"
    path = directory / "detector.pkl"
    truncated = path.read_bytes()[:100]
    path.write_bytes(truncated)
    # Re-sign the manifest so that decoding, not the checksum, fails.
    manifest = json.loads((directory / "manifest.json").read_text())
    import hashlib

    manifest["files"]["detector.pkl"] = {
        "sha256": hashlib.sha256(truncated).hexdigest(),
        "bytes": len(truncated),
    }
    (directory / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ArtifactCorruptError, match="detector.pkl.*retrain"):
        load_model(tmp_path, "census", 1)


def test_load_missing_file(trained, tmp_path):
    trained.save(tmp_path)
    (tmp_path / "census" / "1" / "calibration.json").unlink()
    with pytest.raises(ArtifactMissingError, match="calibration.json"):
        load_model(tmp_path, "census", 1)


def test_load_missing_version(tmp_path):
    with pytest.raises(ArtifactMissingError, match="not found"):
        load_model(tmp_path, "census", 3)


def test_load_other_format(trained, tmp_path):
    trained.save(tmp_path)
    path = tmp_path / "census" / "1" / "manifest.json"
    manifest = json.loads(path.read_text())
    manifest["artifact_format"] = 99
    path.write_text(json.dumps(manifest))
    with pytest.raises(ArtifactFormatError, match="expected artifact format 2, got 99"):
        load_model(tmp_path, "census", 1)


def test_detector_state_round_trip(trained, frame):
    state = trained.detector_state()
    first = trained.score_block(frame.head(400), learn=True)
    trained.restore_detector_state(state)
    again = trained.score_block(frame.head(400), learn=True)
    np.testing.assert_array_equal(first, again)


def test_score_frame_keeps_index(trained, frame):
    rows = frame.head(4).set_axis(["a", "b", "c", "d"])
    out = trained.score_frame(rows, learn=False)
    assert list(out.index) == ["a", "b", "c", "d"]


def test_score_block_reuses_check(trained, frame):
    records = frame.head(20).to_dict("records")
    check = trained.check_block(records)
    np.testing.assert_array_equal(
        trained.score_block(check, learn=False),
        trained.score_block(records, learn=False),
    )


def test_contamination_lowers_threshold(frame):
    plain = train_model(frame, model="m", version=1, target="income")
    dirty = train_model(
        frame, model="m", version=1, target="income", contamination=0.05
    )
    expected = np.quantile(plain.calibration_scores, 0.95 * 0.99)
    assert dirty.threshold == pytest.approx(expected)
    assert dirty.threshold < plain.threshold


def test_restore_state_of_other_version_rejected(trained, frame):
    other = train_model(frame, model="census", version=2, target="income")
    with pytest.raises(ArtifactFormatError, match="census:1, got format 1 of census:2"):
        trained.restore_detector_state(other.detector_state())
