"""Training profile, per-feature range checks and the automatic outlier detector."""
