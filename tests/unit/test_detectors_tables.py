"""read_table: CSV with missing markers, the Adult layout and Parquet."""

import gzip

import pandas as pd
import pytest

from detectors import TableReadError, read_table


def test_csv_question_mark_and_empty_are_missing(tmp_path):
    path = tmp_path / "train.csv"
    path.write_text("age,city\n39,Oslo\n?,\n41,?\n")
    frame = read_table(path)
    assert frame["age"].isna().tolist() == [False, True, False]
    assert frame["city"].isna().tolist() == [False, True, True]
    assert frame["age"].dtype == "float64"


def test_adult_layout_with_names(tmp_path):
    path = tmp_path / "adult.test.gz"
    lines = "|1x3 Cross validator\n25, Private, 226802, <=50K.\n38, ?, 89814, >50K.\n"
    with gzip.open(path, "wt") as stream:
        stream.write(lines)
    frame = read_table(path, names=["age", "workclass", "fnlwgt", "income"])
    assert list(frame.columns) == ["age", "workclass", "fnlwgt", "income"]
    assert frame["age"].tolist() == [25, 38]
    assert frame["workclass"].iloc[0] == "Private"
    assert pd.isna(frame["workclass"].iloc[1])
    assert frame["income"].tolist() == ["<=50K.", ">50K."]


def test_parquet_round_trip(tmp_path):
    path = tmp_path / "rows.parquet"
    original = pd.DataFrame({"x": [1.5, None], "c": ["a", "b"]})
    original.to_parquet(path)
    pd.testing.assert_frame_equal(read_table(path), pd.read_parquet(path))


def test_parquet_names_rename(tmp_path):
    path = tmp_path / "rows.parquet"
    pd.DataFrame({"a": [1], "b": [2]}).to_parquet(path)
    assert list(read_table(path, names=["x", "y"]).columns) == ["x", "y"]


def test_parquet_names_count_mismatch(tmp_path):
    path = tmp_path / "rows.parquet"
    pd.DataFrame({"a": [1], "b": [2]}).to_parquet(path)
    with pytest.raises(TableReadError, match="expected 3 columns"):
        read_table(path, names=["x", "y", "z"])


def test_missing_file(tmp_path):
    with pytest.raises(TableReadError, match="file not found"):
        read_table(tmp_path / "absent.csv")


def test_damaged_parquet(tmp_path):
    path = tmp_path / "bad.parquet"
    path.write_bytes(b"not parquet")
    with pytest.raises(TableReadError, match="bad.parquet"):
        read_table(path)
