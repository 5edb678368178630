"""Command-line errors that need no Kafka or ClickHouse."""

import subprocess
import sys

from tests.conftest import ROOT


def test_train_existing_version_is_clear_error(tmp_path):
    (tmp_path / "census" / "1").mkdir(parents=True)
    data = ROOT / "deploy" / "demo" / "data" / "adult.data.gz"
    result = subprocess.run(
        [sys.executable, "-m", "streams", "train", "--model", "census",
         "--version", "1", "--data", str(data), "--target", "income",
         "--store", str(tmp_path), "--no-register"],
        capture_output=True, text=True, cwd=ROOT, timeout=120,
    )  # fmt: skip
    assert result.returncode == 2
    assert "already contains census version 1" in result.stderr
    assert "--overwrite" in result.stderr
    assert "Traceback" not in result.stderr
