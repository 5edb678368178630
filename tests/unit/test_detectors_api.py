"""Public names of the detectors package and its exception tree."""

import detectors
from detectors import errors


def test_all_sorted_and_importable():
    assert detectors.__all__ == sorted(detectors.__all__)
    for name in detectors.__all__:
        assert hasattr(detectors, name), name


def test_interface_names_exported():
    expected = {"ModelVersion", "Status", "train_model", "load_model", "read_table"}
    assert expected <= set(detectors.__all__)


def test_every_error_is_a_detector_error():
    for name in errors.__all__:
        assert issubclass(getattr(errors, name), errors.DetectorError), name


def test_every_error_exported():
    assert set(errors.__all__) <= set(detectors.__all__)
