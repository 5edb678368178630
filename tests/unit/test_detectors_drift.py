"""Drift per batch: KS and chi-square against training, Benjamini-Hochberg."""

import json

import numpy as np
import pandas as pd
import pytest
from scipy import special, stats

from detectors import (
    ArtifactFormatError,
    DriftMethod,
    DriftReference,
    build_profile,
    build_reference,
    check_block,
    drift_block,
    load_model,
    train_model,
)
from detectors.drift import (
    _bins_of_categories,
    _kolmogorov_smirnov,
    benjamini_hochberg,
)

SECTORS = ["private", "public", "self"]
SECTOR_SHARES = [0.7, 0.2, 0.1]
REGIONS = [f"r{i}" for i in range(30)]
# Ten common regions and twenty rare ones, expected under 5 times in 100 rows.
REGION_SHARES = np.r_[np.full(10, 0.07), np.full(20, 0.3 / 20)]
NUMERIC = [f"x{i}" for i in range(10)] + ["age"]


def _frame(rng, rows, shift=0.0, sector_shares=SECTOR_SHARES):
    columns = {f"x{i}": rng.normal(0.0, 1.0, rows) for i in range(10)}
    columns["x0"] = columns["x0"] + shift
    columns["age"] = rng.integers(18, 80, rows)
    columns["sector"] = rng.choice(SECTORS, rows, p=sector_shares)
    columns["region"] = rng.choice(REGIONS, rows, p=REGION_SHARES)
    columns["flag"] = rng.choice([True, False], rows)
    return pd.DataFrame(columns)


@pytest.fixture(scope="module")
def training():
    rng = np.random.default_rng(0)
    frame = _frame(rng, 5000)
    profile = build_profile(frame)
    reference = build_reference(check_block(profile, frame), seed=0)
    return profile, reference


def _by_feature(results):
    return {result.feature: result for result in results}


def test_reference_sample_size_and_order(training):
    profile, reference = training
    assert sorted(reference.samples) == sorted(NUMERIC)
    for values in reference.samples.values():
        assert len(values) == 2000
        assert np.all(np.diff(values) >= 0)


def test_reference_drawn_from_training():
    frame = pd.DataFrame({"x": np.arange(5000.0), "c": ["a", "b"] * 2500})
    check = check_block(build_profile(frame), frame)
    sample = build_reference(check, seed=3, size=100).samples["x"]
    assert len(np.unique(sample)) == 100
    assert set(sample.tolist()) <= set(frame["x"].tolist())


def test_reference_seeded():
    frame = pd.DataFrame({"x": np.arange(5000.0)})
    check = check_block(build_profile(frame), frame)
    first = build_reference(check, seed=1, size=100)
    assert build_reference(check, seed=1, size=100) == first
    assert build_reference(check, seed=2, size=100) != first


def test_reference_skips_missing():
    frame = pd.DataFrame({"x": [1.0, None, 3.0, None]})
    check = check_block(build_profile(frame), frame)
    assert build_reference(check).samples["x"].tolist() == [1.0, 3.0]


def test_reference_json_round_trip(training):
    _, reference = training
    assert DriftReference.from_json(reference.to_json()) == reference


def test_reference_other_format_rejected(training):
    _, reference = training
    data = json.loads(reference.to_json())
    data["reference_format"] = 7
    with pytest.raises(ValueError, match="expected reference format 1, got 7"):
        DriftReference.from_json(json.dumps(data))


def test_false_alarms_near_alpha(training):
    """Batches drawn like training are flagged at about the nominal rate."""
    profile, reference = training
    rng = np.random.default_rng(1)
    batches = 300
    rejected = np.zeros(len(profile.features))
    any_drifted = 0
    for _ in range(batches):
        results = drift_block(profile, reference, _frame(rng, 100))
        rejected += [result.p_value <= 0.05 for result in results]
        any_drifted += any(result.drifted for result in results)
    rates = dict(zip(profile.features, rejected / batches, strict=True))
    continuous = [rates[name] for name in NUMERIC if name != "age"]
    categorical = [rates["sector"], rates["region"], rates["flag"]]
    assert 0.02 <= np.mean(continuous) <= 0.08
    assert 0.02 <= np.mean(categorical) <= 0.09
    # Integer ages tie, which makes KS conservative.
    assert rates["age"] <= 0.08
    assert any_drifted / batches <= 0.08


def test_mean_shift_detected(training):
    profile, reference = training
    rng = np.random.default_rng(2)
    for _ in range(20):
        results = _by_feature(drift_block(profile, reference, _frame(rng, 100, 1.0)))
        assert results["x0"].drifted
        assert results["x0"].method is DriftMethod.KS
        assert results["x0"].adjusted_p_value < 1e-4


def test_category_shares_change_detected(training):
    profile, reference = training
    rng = np.random.default_rng(3)
    for _ in range(20):
        batch = _frame(rng, 100, sector_shares=[0.3, 0.3, 0.4])
        results = _by_feature(drift_block(profile, reference, batch))
        assert results["sector"].drifted
        assert results["sector"].method is DriftMethod.CHI_SQUARE


def test_shift_leaves_other_features(training):
    profile, reference = training
    rng = np.random.default_rng(4)
    flagged = 0
    for _ in range(20):
        results = drift_block(profile, reference, _frame(rng, 100, 1.0))
        flagged += sum(result.drifted for result in results if result.feature != "x0")
    assert flagged <= 0.05 * 20 * (len(profile.features) - 1)


def test_unseen_categories_detected(training):
    profile, reference = training
    batch = _frame(np.random.default_rng(5), 100)
    batch.loc[:29, "sector"] = "space"
    results = _by_feature(drift_block(profile, reference, batch))
    assert results["sector"].drifted


def test_ks_matches_scipy(training):
    profile, reference = training
    rng = np.random.default_rng(6)
    for size, shift in [(20, 0.0), (50, 0.3), (100, 0.0), (200, 0.2)]:
        batch = _frame(rng, size, shift)
        result = _by_feature(drift_block(profile, reference, batch))["x0"]
        expected = stats.ks_2samp(batch["x0"], reference.samples["x0"], method="exact")
        assert result.statistic == pytest.approx(expected.statistic)
        assert result.p_value == pytest.approx(expected.pvalue, rel=0.05, abs=1e-4)


def test_chi_square_matches_scipy(training):
    profile, reference = training
    batch = _frame(np.random.default_rng(7), 200)
    result = _by_feature(drift_block(profile, reference, batch))["sector"]
    observed = batch["sector"].value_counts().reindex(SECTORS).to_numpy()
    training_counts = np.array([profile["sector"].categories[key] for key in SECTORS])
    expected_counts = 200 * training_counts / training_counts.sum()
    expected = stats.chisquare(observed, expected_counts)
    assert result.statistic == pytest.approx(expected.statistic)
    assert result.p_value == pytest.approx(expected.pvalue)


def test_rare_categories_merged(training):
    profile, reference = training
    batch = _frame(np.random.default_rng(8), 100)
    region = _by_feature(drift_block(profile, reference, batch))["region"]
    assert region.tested
    assert np.isfinite(region.statistic)
    assert region.p_value > 1e-3


def test_correction_is_benjamini_hochberg(training):
    profile, reference = training
    batch = _frame(np.random.default_rng(9), 100, 0.25)
    results = drift_block(profile, reference, batch)
    raw = np.array([result.p_value for result in results])
    adjusted = np.array([result.adjusted_p_value for result in results])
    np.testing.assert_allclose(adjusted, stats.false_discovery_control(raw))
    assert np.all(adjusted >= raw)


def test_adjusted_p_value_decides(training):
    """A raw p-value under alpha is not drift when the adjusted one is over it."""
    profile, reference = training
    rng = np.random.default_rng(10)
    found = False
    for _ in range(200):
        for result in drift_block(profile, reference, _frame(rng, 100)):
            assert result.drifted == (result.adjusted_p_value <= 0.05)
            found = found or (result.p_value <= 0.05 and not result.drifted)
    assert found


def test_benjamini_hochberg_matches_scipy():
    p_values = np.random.default_rng(11).uniform(size=40) ** 3
    np.testing.assert_allclose(
        benjamini_hochberg(p_values), stats.false_discovery_control(p_values)
    )


def test_benjamini_hochberg_empty():
    assert benjamini_hochberg(np.array([])).tolist() == []


def test_alpha_configurable(training):
    profile, reference = training
    batch = _frame(np.random.default_rng(12), 100, 0.25)
    strict = _by_feature(drift_block(profile, reference, batch, alpha=1e-9))
    loose = _by_feature(drift_block(profile, reference, batch, alpha=0.5))
    assert not strict["x0"].drifted
    assert loose["x0"].drifted


@pytest.mark.parametrize("alpha", [0, 1, -0.1, 1.5, "0.05", True])
def test_invalid_alpha_rejected(training, alpha):
    profile, reference = training
    with pytest.raises(ValueError, match="alpha: expected a number between 0 and 1"):
        drift_block(profile, reference, [], alpha=alpha)


def test_too_few_values_not_tested(training):
    profile, reference = training
    batch = _frame(np.random.default_rng(13), 19)
    for result in drift_block(profile, reference, batch):
        assert not result.tested
        assert result.p_value is None
        assert result.adjusted_p_value is None
        assert not result.drifted
        assert result.reason == "expected at least 20 values, got 19"


def test_min_values_configurable(training):
    profile, reference = training
    batch = _frame(np.random.default_rng(14), 19)
    results = drift_block(profile, reference, batch, min_values=10)
    assert all(result.tested for result in results)


def test_missing_and_wrong_type_counted(training):
    profile, reference = training
    records = _frame(np.random.default_rng(15), 40).to_dict("records")
    for row in records[:15]:
        row["x1"] = None
    for row in records[15:20]:
        row["x1"] = "12"
    del records[20]["x1"]
    result = _by_feature(drift_block(profile, reference, records))["x1"]
    assert (result.values, result.missing, result.wrong_type) == (19, 16, 5)
    assert not result.tested


def test_categorical_missing_counted(training):
    profile, reference = training
    records = _frame(np.random.default_rng(16), 30).to_dict("records")
    for row in records[:5]:
        row["sector"] = None
    for row in records[5:7]:
        row["sector"] = ["private"]
    result = _by_feature(drift_block(profile, reference, records))["sector"]
    assert (result.values, result.missing, result.wrong_type) == (23, 5, 2)
    assert result.tested


def test_single_category_not_tested():
    frame = pd.DataFrame({"c": ["a"] * 100, "x": np.arange(100.0)})
    profile = build_profile(frame)
    reference = build_reference(check_block(profile, frame))
    result = drift_block(profile, reference, frame.head(50))[0]
    assert not result.tested
    assert "fewer than two bins" in result.reason


def test_numeric_without_training_values_not_tested():
    frame = pd.DataFrame({"x": [None] * 50, "y": np.arange(50.0)}).astype(float)
    profile = build_profile(frame)
    reference = build_reference(check_block(profile, frame))
    result = drift_block(profile, reference, [{"x": 1.0}] * 30)[0]
    assert not result.tested
    assert result.reason == "training has no values of this feature"


def test_reference_must_cover_numeric_features(training):
    profile, _ = training
    with pytest.raises(ValueError, match="got none for \\['x0'"):
        drift_block(profile, DriftReference(samples={}), [])


def test_result_to_dict(training):
    profile, reference = training
    data = drift_block(profile, reference, _frame(np.random.default_rng(17), 50))[0]
    data = data.to_dict()
    assert data["feature"] == "x0"
    assert data["method"] == "ks"
    assert json.loads(json.dumps(data)) == data


@pytest.fixture(scope="module")
def model_version():
    frame = _frame(np.random.default_rng(18), 2000)
    return train_model(frame, model="shop", version=1, seed=4, reference_size=500)


def test_model_version_reference(model_version):
    assert model_version.reference.seed == 4
    assert len(model_version.reference.samples["x0"]) == 500


def test_model_version_drift_survives_save(model_version, tmp_path):
    model_version.save(tmp_path)
    loaded = load_model(tmp_path, "shop", 1)
    batch = _frame(np.random.default_rng(19), 100, 0.5)
    assert loaded.reference == model_version.reference
    assert loaded.drift_block(batch) == model_version.drift_block(batch)


def test_old_artifact_format_asks_to_retrain(model_version, tmp_path):
    model_version.save(tmp_path)
    path = tmp_path / "shop" / "1" / "manifest.json"
    manifest = json.loads(path.read_text())
    manifest["artifact_format"] = 1
    path.write_text(json.dumps(manifest))
    with pytest.raises(ArtifactFormatError, match="expected artifact format 2, got 1"):
        load_model(tmp_path, "shop", 1)
    with pytest.raises(ArtifactFormatError, match="retrain the model version"):
        load_model(tmp_path, "shop", 1)


def test_saved_reference_file(model_version, tmp_path):
    model_version.save(tmp_path)
    directory = tmp_path / "shop" / "1"
    manifest = json.loads((directory / "manifest.json").read_text())
    assert "reference.json" in manifest["files"]
    data = json.loads((directory / "reference.json").read_text())
    assert data["seed"] == 4
    assert len(data["features"]["x0"]) == 500


def _pooled_ks(values, reference):
    """The KS distance by comparing both distribution functions at every value."""
    values = np.sort(values)
    pooled = np.concatenate([values, reference])
    batch_cdf = np.searchsorted(values, pooled, side="right") / len(values)
    reference_cdf = np.searchsorted(reference, pooled, side="right") / len(reference)
    return float(np.max(np.abs(batch_cdf - reference_cdf)))


@pytest.mark.parametrize("seed", range(20))
def test_ks_distance_equals_pooled_comparison(seed):
    rng = np.random.default_rng(seed)
    # Small integers give many ties within and across the two samples.
    reference = np.sort(rng.integers(0, 12, 2000).astype(float))
    for values in (
        rng.integers(0, 12, 100).astype(float),
        rng.integers(5, 20, 37).astype(float),
        rng.normal(3.0, 4.0, 250),
        np.full(20, 4.0),
        np.full(20, -1.0),
    ):
        distance, _ = _kolmogorov_smirnov(values, reference)
        assert distance == _pooled_ks(values, reference)


def test_p_values_equal_one_call_per_feature(training):
    profile, reference = training
    batch = _frame(np.random.default_rng(7), 100, shift=0.4)
    for result in drift_block(profile, reference, batch):
        assert result.tested
        if result.method is DriftMethod.KS:
            values = batch[result.feature].to_numpy(dtype=float)
            samples = reference.samples[result.feature]
            effective = len(values) * len(samples) / (len(values) + len(samples))
            root = np.sqrt(effective)
            argument = (root + 0.12 + 0.11 / root) * _pooled_ks(values, samples)
            assert result.p_value == float(special.kolmogorov(argument))
        else:
            feature = profile[result.feature]
            _, _, shares = _bins_of_categories(
                tuple(feature.categories.items()), feature.count, result.values
            )
            expected = float(special.chdtrc(len(shares) - 1, result.statistic))
            assert result.p_value == expected
