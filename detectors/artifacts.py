"""Writing and verifying the files of a stored model version.

A model version lives in ``STORE/<model>/<version>/``:

- ``profile.json``: the training profile, readable JSON.
- ``detector.pkl``: the fitted :class:`AutoOutlierDetector`, pickled.
- ``calibration.json``: the threshold, the target alert rate, the
  contamination and the held-out scores behind the threshold.
- ``reference.json``: the sample of training values per numeric feature
  that batches are tested for drift against.
- ``metrics.json``: the custom metrics, a JSON list of metric objects.
- ``manifest.json``: artifact format, oddwatch version, training rows,
  creation time and the sha256 checksum of each file above.

Loading verifies the format and every checksum before decoding anything.
A version written in an older artifact format, such as format 1 without
``reference.json`` and ``metrics.json``, must be trained again. Pickles run
code when loaded, so a store must only hold files written by a trusted
oddwatch.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import pickle
import shutil
import tempfile
from collections.abc import Mapping
from importlib import metadata
from pathlib import Path
from typing import Any

from .errors import (
    ArtifactCorruptError,
    ArtifactFormatError,
    ArtifactMissingError,
    ChecksumMismatchError,
)

__all__ = [
    "ARTIFACT_FORMAT",
    "oddwatch_version",
    "read_verified",
    "rewrite_version",
    "version_dir",
    "write_version",
]

logger = logging.getLogger(__name__)

ARTIFACT_FORMAT = 2
MANIFEST = "manifest.json"

_RETRAIN = "retrain the model version with `oddwatch train`"


def oddwatch_version() -> str:
    """Return the installed oddwatch version, or "unknown" outside an install."""
    try:
        return metadata.version("oddwatch")
    except metadata.PackageNotFoundError:
        return "unknown"


def version_dir(store: str | os.PathLike[str], model: str, version: int | str) -> Path:
    """Return the directory of one model version in a store."""
    return Path(store) / str(model) / str(version)


def write_version(
    directory: Path,
    files: Mapping[str, bytes],
    manifest: Mapping[str, Any],
    overwrite: bool = False,
) -> None:
    """Write the files and their manifest, replacing the directory in one rename."""
    if directory.exists() and not overwrite:
        raise FileExistsError(
            f"{directory} already contains a model version; choose a new version "
            "number or save with overwrite=True"
        )
    directory.parent.mkdir(parents=True, exist_ok=True)
    staging = _staged(directory, files, manifest)
    try:
        if directory.exists():
            shutil.rmtree(directory)
        os.replace(staging, directory)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def rewrite_version(
    directory: Path, changed: Mapping[str, bytes], manifest_changes: Mapping[str, Any]
) -> None:
    """Replace some files of a stored version and update its manifest.

    The stored files are verified first. The new directory is staged next to
    the old one and swapped in by two renames, so a reader sees the old
    version or the new one, never a mix. A reader that looks in the instant
    between the two renames finds no directory and has to load again.

    NOTE: two updates of the same version at once are not serialised, so
    the later one can undo the change of the earlier one.
    """
    manifest, files = read_verified(directory)
    unknown = sorted(set(changed) - set(files))
    if unknown:
        raise ValueError(
            f"{directory}: expected files listed in {MANIFEST}, got {unknown}"
        )
    manifest = {
        key: value
        for key, value in {**manifest, **manifest_changes}.items()
        if key not in ("artifact_format", "files")
    }
    staging = _staged(directory, {**files, **changed}, manifest)
    retired = Path(
        tempfile.mkdtemp(prefix=f".{directory.name}-old-", dir=directory.parent)
    )
    try:
        os.replace(directory, retired / directory.name)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        retired.rmdir()
        raise
    try:
        os.replace(staging, directory)
    except BaseException:
        # The old directory goes back; if that fails too, it stays in ``retired``.
        os.replace(retired / directory.name, directory)
        shutil.rmtree(staging, ignore_errors=True)
        retired.rmdir()
        raise
    shutil.rmtree(retired)
    logger.info("rewrote %s in %s", ", ".join(sorted(changed)), directory)


def _staged(
    directory: Path, files: Mapping[str, bytes], manifest: Mapping[str, Any]
) -> Path:
    """Write a complete version directory next to ``directory`` and return it."""
    staging = Path(tempfile.mkdtemp(prefix=f".{directory.name}-", dir=directory.parent))
    try:
        checksums = {}
        for name, content in files.items():
            (staging / name).write_bytes(content)
            checksums[name] = {"sha256": _sha256(content), "bytes": len(content)}
        full_manifest = {
            "artifact_format": ARTIFACT_FORMAT,
            **manifest,
            "files": checksums,
        }
        (staging / MANIFEST).write_text(json.dumps(full_manifest, indent=2) + "\n")
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return staging


def read_verified(directory: Path) -> tuple[dict[str, Any], dict[str, bytes]]:
    """Read the manifest and every file it lists, checking format and checksums."""
    manifest_path = directory / MANIFEST
    if not directory.is_dir():
        raise ArtifactMissingError(
            f"model version directory {directory} not found; check the store path, "
            f"model name and version, or {_RETRAIN}"
        )
    manifest = _read_manifest(manifest_path)
    found_format = manifest.get("artifact_format")
    if found_format != ARTIFACT_FORMAT:
        raise ArtifactFormatError(
            f"{manifest_path}: expected artifact format {ARTIFACT_FORMAT}, got "
            f"{found_format!r} (written by oddwatch "
            f"{manifest.get('oddwatch_version', 'unknown')}); {_RETRAIN} using "
            f"oddwatch {oddwatch_version()}"
        )

    files = {}
    for name, expected in manifest["files"].items():
        path = directory / name
        if not path.is_file():
            raise ArtifactMissingError(
                f"{path}: listed in the manifest but not found; {_RETRAIN}"
            )
        content = path.read_bytes()
        found = _sha256(content)
        if found != expected["sha256"]:
            raise ChecksumMismatchError(
                f"{path}: expected sha256 {expected['sha256']} ({expected['bytes']} "
                f"bytes), got {found} ({len(content)} bytes); the file was changed or "
                f"damaged after it was written, {_RETRAIN}"
            )
        files[name] = content
    return manifest, files


def load_pickle(path: Path, content: bytes) -> Any:
    """Unpickle a verified file, mapping every decoding failure to one error."""
    try:
        return pickle.loads(content)
    except (
        pickle.UnpicklingError,
        EOFError,
        AttributeError,
        ImportError,
        TypeError,
        ValueError,
        IndexError,
    ) as error:
        raise ArtifactCorruptError(
            f"{path}: expected a pickled detector, got bytes that fail to load "
            f"({type(error).__name__}: {error}); {_RETRAIN}"
        ) from error


def load_json(path: Path, content: bytes) -> Any:
    """Parse a verified JSON file, mapping a decoding failure to one error."""
    try:
        return json.loads(content)
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ArtifactCorruptError(
            f"{path}: expected JSON, got bytes that fail to parse ({error}); {_RETRAIN}"
        ) from error


def _read_manifest(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise ArtifactMissingError(f"{path} not found; {_RETRAIN}")
    manifest = load_json(path, path.read_bytes())
    if not isinstance(manifest, dict) or not isinstance(manifest.get("files"), dict):
        raise ArtifactCorruptError(
            f"{path}: expected a JSON object with a 'files' mapping, got "
            f"{type(manifest).__name__}; {_RETRAIN}"
        )
    return manifest


def _sha256(content: bytes) -> str:
    return hashlib.sha256(content).hexdigest()
