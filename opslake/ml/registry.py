"""The model registry: versioned model artifacts in the lake, champion/challenger, drift.

Layout under the lake root (the lake may be local or S3, so everything goes through
:class:`~opslake.lake.storage.Lake`)::

    ml/models/<name>/v<N>/artifact.bin      the pickled model, never rewritten
    ml/models/<name>/v<N>/meta.json         ModelVersion: window, parameters, metrics, sha256,
                                            data profile; written last, so a version exists
                                            only once its meta.json does
    ml/models/<name>/champion.json          which version serves, since when, and why
    ml/models/<name>/decisions/<ts>-<id>.json  one object per promotion decision (append-only)

A version is immutable: registering never writes into an existing ``v<N>/``. The only object
that is ever replaced is the small ``champion.json`` pointer. Each decision is its own object
because S3 has no append; listing the folder in name order reads the log chronologically.

Artifacts are pickles, and unpickling runs code: :func:`load` checks the artifact's sha256
against ``meta.json`` before unpickling and refuses on mismatch.

Drift uses the population stability index (PSI) per feature against the training data's
profile (decile bins of each feature plus a missing-value bin, stored in ``meta.json``).
"""

from __future__ import annotations

import hashlib
import json
import math
import pickle
import re
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np

from opslake.errors import ArtifactIntegrityError, InputError, NotFoundError, StorageError
from opslake.lake.storage import Lake

ROOT = ("ml", "models")
#: PSI above this means the feature's distribution moved (the usual rule of thumb).
PSI_DRIFTED = 0.2
_NAME = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,99}$")
_VERSION_DIR = re.compile(r"^v(\d+)$")
_PROFILE_QUANTILES = np.linspace(0.1, 0.9, 9)
# Empty bins would make PSI infinite; this floor is the conventional smoothing.
_PSI_FLOOR = 1e-4


@dataclass(frozen=True)
class ModelVersion:
    """What was registered as one version of a model (the content of its ``meta.json``)."""

    name: str
    version: int
    kind: str
    created_at: datetime
    created_by: str
    train_start: datetime
    train_end: datetime
    parameters: dict[str, Any]
    features: list[str]
    metrics: dict[str, float]
    primary_metric: str
    higher_is_better: bool
    sha256: str
    size_bytes: int
    profile: dict[str, Any] = field(default_factory=dict)

    @property
    def score(self) -> float:
        """Value of the primary evaluation metric."""
        return self.metrics[self.primary_metric]

    def to_json(self) -> bytes:
        """The stored form."""
        data = asdict(self)
        for key in ("created_at", "train_start", "train_end"):
            data[key] = data[key].isoformat()
        return json.dumps(data, ensure_ascii=False, sort_keys=True, indent=1).encode()

    @classmethod
    def from_json(cls, raw: bytes) -> ModelVersion:
        """Read the stored form."""
        d = json.loads(raw)
        for key in ("created_at", "train_start", "train_end"):
            d[key] = datetime.fromisoformat(d[key])
        return cls(**d)


@dataclass(frozen=True)
class Decision:
    """One champion/challenger decision, promoted or not (one object in the decisions log)."""

    name: str
    challenger: int
    champion: int | None
    promoted: bool
    metric: str
    higher_is_better: bool
    challenger_value: float
    champion_value: float | None
    margin: float
    reason: str
    decided_at: datetime
    decided_by: str

    def to_json(self) -> bytes:
        """The stored form."""
        data = asdict(self)
        data["decided_at"] = self.decided_at.isoformat()
        return json.dumps(data, ensure_ascii=False, sort_keys=True, indent=1).encode()

    @classmethod
    def from_json(cls, raw: bytes) -> Decision:
        """Read the stored form."""
        d = json.loads(raw)
        d["decided_at"] = datetime.fromisoformat(d["decided_at"])
        return cls(**d)


@dataclass(frozen=True)
class Champion:
    """The ``champion.json`` pointer: which version serves and why."""

    version: int
    promoted_at: datetime
    promoted_by: str
    reason: str
    previous: int | None


@dataclass(frozen=True)
class DriftReport:
    """PSI of each feature against the training profile, and the overall verdict."""

    psi: dict[str, float]
    threshold: float
    rows: int

    @property
    def drifted_features(self) -> list[str]:
        """Features whose PSI exceeds the threshold, most drifted first."""
        return sorted(
            (f for f, v in self.psi.items() if v > self.threshold), key=lambda f: -self.psi[f]
        )

    @property
    def drifted(self) -> bool:
        """True when any feature drifted."""
        return bool(self.drifted_features)


@dataclass(frozen=True)
class RetrainVerdict:
    """Whether a model should be retrained, and the reasons (age, drift, no model yet)."""

    retrain: bool
    reasons: list[str]
    version: int | None
    age: timedelta | None
    drift: DriftReport | None


# -- paths ----------------------------------------------------------------------------------
def _check_name(name: str) -> str:
    if not _NAME.match(name):
        raise InputError(
            f"model name {name!r} is not allowed; use lower-case letters, digits, "
            "'_', '-' and '.' (at most 100 characters), starting with a letter "
            "or digit"
        )
    return name


def _model_dir(lake: Lake, name: str) -> str:
    return lake.path(*ROOT, _check_name(name))


def _version_dir(lake: Lake, name: str, version: int) -> str:
    return f"{_model_dir(lake, name)}/v{version}"


def _version_numbers(lake: Lake, name: str) -> list[int]:
    """Every ``v<N>`` folder, including one whose registration never finished."""
    found = (_VERSION_DIR.match(d) for d in lake.list_dirs(_model_dir(lake, name)))
    return sorted(int(m.group(1)) for m in found if m)


def _utc(value: datetime, what: str) -> datetime:
    if value.tzinfo is None:
        raise InputError(
            f"{what} {value} has no time zone; pass an aware datetime "
            "(e.g. datetime(..., tzinfo=UTC))"
        )
    return value.astimezone(UTC)


# -- registering and reading ----------------------------------------------------------------
def register(
    lake: Lake,
    name: str,
    model: Any,
    *,
    kind: str,
    train_start: datetime,
    train_end: datetime,
    parameters: Mapping[str, Any],
    features: Sequence[str],
    metrics: Mapping[str, float],
    primary_metric: str,
    higher_is_better: bool = True,
    profile: Mapping[str, Any] | None = None,
    created_by: str = "opslake",
) -> ModelVersion:
    """Store ``model`` as the next version of ``name``; it does not become champion by itself."""
    train_start, train_end = _utc(train_start, "train_start"), _utc(train_end, "train_end")
    if train_end <= train_start:
        raise InputError(
            f"training window {train_start} .. {train_end} is empty; "
            "train_end must be after train_start"
        )
    if primary_metric not in metrics:
        raise InputError(
            f"primary metric {primary_metric!r} is not among the evaluation "
            f"metrics {sorted(metrics)}; add its value to metrics"
        )
    values = {k: float(v) for k, v in metrics.items()}
    if not all(math.isfinite(v) for v in values.values()):
        raise InputError(
            f"evaluation metrics {values} contain NaN or infinity; "
            "fix the evaluation before registering"
        )
    try:
        artifact = pickle.dumps(model, protocol=pickle.HIGHEST_PROTOCOL)
        json.dumps([dict(parameters), dict(profile or {})])
    except (pickle.PicklingError, TypeError, AttributeError) as exc:
        raise InputError(
            f"model {name!r} cannot be stored: {exc}; the model must pickle and "
            "parameters/profile must be JSON-serialisable"
        ) from exc
    existing = _version_numbers(lake, name)
    number = existing[-1] + 1 if existing else 1
    directory = _version_dir(lake, name, number)
    if lake.exists(directory):
        raise StorageError(
            f"{directory} appeared while registering; another writer registered "
            f"{name} concurrently. Register again (it takes the next version)"
        )
    meta = ModelVersion(
        name,
        number,
        kind,
        datetime.now(UTC),
        created_by,
        train_start,
        train_end,
        dict(parameters),
        list(features),
        values,
        primary_metric,
        higher_is_better,
        hashlib.sha256(artifact).hexdigest(),
        len(artifact),
        dict(profile or {}),
    )
    lake.put_atomic(f"{directory}/artifact.bin", [artifact])
    lake.put_atomic(f"{directory}/meta.json", [meta.to_json()])
    return meta


def versions(lake: Lake, name: str) -> list[ModelVersion]:
    """Every complete version of a model, oldest first (empty when there is none)."""
    out = []
    for number in _version_numbers(lake, name):
        path = f"{_version_dir(lake, name, number)}/meta.json"
        if lake.exists(path):
            out.append(ModelVersion.from_json(lake.read_bytes(path)))
    return out


def version(lake: Lake, name: str, number: int) -> ModelVersion:
    """The metadata of one version."""
    path = f"{_version_dir(lake, name, number)}/meta.json"
    if not lake.exists(path):
        known = [v.version for v in versions(lake, name)]
        raise NotFoundError(
            f"model {name!r} has no version {number}; registered versions: "
            f"{known or 'none'} (register one with opslake.ml.registry.register)"
        )
    return ModelVersion.from_json(lake.read_bytes(path))


def models(lake: Lake) -> list[str]:
    """Names of the models that have at least one complete version."""
    return [n for n in lake.list_dirs(lake.path(*ROOT)) if _NAME.match(n) and versions(lake, n)]


def champion(lake: Lake, name: str) -> Champion | None:
    """The current champion pointer, or ``None`` before the first promotion."""
    path = f"{_model_dir(lake, name)}/champion.json"
    if not lake.exists(path):
        return None
    d = json.loads(lake.read_bytes(path))
    return Champion(
        d["version"],
        datetime.fromisoformat(d["promoted_at"]),
        d["promoted_by"],
        d["reason"],
        d["previous"],
    )


def load(lake: Lake, name: str, number: int | None = None) -> tuple[Any, ModelVersion]:
    """Unpickle a version (the champion by default) after verifying its sha256."""
    if number is None:
        current = champion(lake, name)
        if current is None:
            raise NotFoundError(
                f"model {name!r} has no champion yet; promote a version with "
                "promote_if_better, or load a version by number"
            )
        number = current.version
    meta = version(lake, name, number)
    path = f"{_version_dir(lake, name, number)}/artifact.bin"
    if not lake.exists(path):
        raise StorageError(
            f"{path} is missing although meta.json records it; the version is "
            "damaged: promote another version or register a new one"
        )
    artifact = lake.read_bytes(path)
    digest = hashlib.sha256(artifact).hexdigest()
    if digest != meta.sha256:
        raise ArtifactIntegrityError(
            f"{path} has sha256 {digest} but {meta.sha256} was recorded at registration: it "
            "was altered and will not be unpickled. Restore the original object from a "
            "backup, or promote another version / register a retrained one"
        )
    return pickle.loads(artifact), meta


# -- champion / challenger ------------------------------------------------------------------
def decisions(lake: Lake, name: str) -> list[Decision]:
    """The decisions log of a model, oldest first."""
    files = lake.list_files(f"{_model_dir(lake, name)}/decisions")
    return [Decision.from_json(lake.read_bytes(f)) for f in files if f.endswith(".json")]


def promote_if_better(
    lake: Lake, name: str, challenger: int, *, margin: float = 0.0, decided_by: str = "opslake"
) -> Decision:
    """Make ``challenger`` champion if its primary metric beats the champion's by > ``margin``.

    The first version to be judged becomes champion. Every decision, refusals included, is
    appended to the decisions log with both metric values.
    """
    if margin < 0:
        raise InputError(
            f"margin {margin} is negative; use 0 or more (in units of the primary metric)"
        )
    new = version(lake, name, challenger)
    current = champion(lake, name)
    old = version(lake, name, current.version) if current else None
    if old is not None and old.primary_metric != new.primary_metric:
        raise InputError(
            f"{name} v{new.version} is judged by {new.primary_metric!r} but the "
            f"champion v{old.version} by {old.primary_metric!r}; evaluate both on "
            "the same primary metric before comparing"
        )
    if old is None:
        promoted, reason = True, "first version judged: becomes champion"
    elif old.version == new.version:
        promoted, reason = False, f"v{new.version} already is the champion"
    else:
        gain = new.score - old.score if new.higher_is_better else old.score - new.score
        promoted = gain > margin
        verb = "beats" if promoted else "does not beat"
        reason = (
            f"{new.primary_metric} {new.score:.6g} vs {old.score:.6g} "
            f"({'higher' if new.higher_is_better else 'lower'} is better): improvement "
            f"{gain:.6g} {verb} the margin {margin:g}"
        )
    now = datetime.now(UTC)
    decision = Decision(
        name,
        new.version,
        old.version if old else None,
        promoted,
        new.primary_metric,
        new.higher_is_better,
        new.score,
        old.score if old else None,
        margin,
        reason,
        now,
        decided_by,
    )
    directory = _model_dir(lake, name)
    lake.put_atomic(
        f"{directory}/decisions/{now:%Y%m%dT%H%M%S%fZ}-{uuid.uuid4().hex[:8]}.json",
        [decision.to_json()],
    )
    if promoted:
        pointer = {
            "version": new.version,
            "promoted_at": now.isoformat(),
            "promoted_by": decided_by,
            "reason": reason,
            "previous": old.version if old else None,
        }
        lake.put_atomic(
            f"{directory}/champion.json", [json.dumps(pointer, sort_keys=True, indent=1).encode()]
        )
    return decision


# -- drift ----------------------------------------------------------------------------------
def _columns(data: Any) -> dict[str, np.ndarray]:
    """Numeric columns of a pandas/polars DataFrame or a mapping of name → values."""
    names = list(data.columns) if hasattr(data, "columns") else list(data)
    try:
        return {str(c): np.asarray(data[c], dtype=float) for c in names}
    except (TypeError, ValueError) as exc:
        raise InputError(
            f"drift needs numeric features: {exc}; pass only the model's numeric feature columns"
        ) from exc


def _bins(values: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Share of values in each bin (``len(edges) + 1`` bins) followed by the missing share."""
    present = values[~np.isnan(values)]
    counts = np.bincount(
        np.searchsorted(edges, present, side="right"), minlength=len(edges) + 1
    ).astype(float)
    return np.append(counts, len(values) - len(present)) / max(len(values), 1)


def profile(data: Any) -> dict[str, Any]:
    """Per-feature decile edges and bin shares of training data, to store for drift checks."""
    out: dict[str, Any] = {}
    for name, values in _columns(data).items():
        present = values[~np.isnan(values)]
        # Ties (a metric that is mostly 0) collapse deciles; duplicate edges would be empty bins.
        edges = (
            np.unique(np.quantile(present, _PROFILE_QUANTILES)) if len(present) else np.array([])
        )
        out[name] = {
            "edges": edges.tolist(),
            "shares": _bins(values, edges).tolist(),
            "rows": len(values),
            "median": float(np.median(present)) if len(present) else None,
        }
    return out


def drift(
    reference: Mapping[str, Any], new_data: Any, *, threshold: float = PSI_DRIFTED
) -> DriftReport:
    """PSI of each profiled feature of ``new_data`` against a :func:`profile`."""
    columns = _columns(new_data)
    missing = sorted(set(reference) - set(columns))
    if missing:
        raise InputError(
            f"new data lacks the profiled features {missing}; pass the same "
            "feature columns the model was trained on"
        )
    rows = len(next(iter(columns.values()))) if columns else 0
    if rows == 0:
        raise InputError("new data has no rows; drift needs a sample of recent data")
    psi = {}
    for name, ref in reference.items():
        expected = np.maximum(np.asarray(ref["shares"]), _PSI_FLOOR)
        actual = np.maximum(_bins(columns[name], np.asarray(ref["edges"])), _PSI_FLOOR)
        psi[name] = float(np.sum((actual - expected) * np.log(actual / expected)))
    return DriftReport(psi, threshold, rows)


def needs_retraining(
    lake: Lake,
    name: str,
    new_data: Any = None,
    *,
    max_age: timedelta,
    threshold: float = PSI_DRIFTED,
    now: datetime | None = None,
) -> RetrainVerdict:
    """Whether the champion is due (training window ended over ``max_age`` ago) or drifted.

    Without a champion the answer is yes; without ``new_data`` only age is judged.
    """
    current = champion(lake, name)
    if current is None:
        return RetrainVerdict(True, ["no champion yet"], None, None, None)
    meta = version(lake, name, current.version)
    age = _utc(now or datetime.now(UTC), "now") - meta.train_end
    reasons = []
    if age > max_age:
        reasons.append(f"training window ended {age} ago (more than {max_age})")
    report = None
    if new_data is not None:
        if not meta.profile:
            raise InputError(
                f"{name} v{meta.version} was registered without a data profile; "
                "register with profile=profile(training_features) to check drift"
            )
        report = drift(meta.profile, new_data, threshold=threshold)
        if report.drifted:
            worst = ", ".join(f"{f} (PSI {report.psi[f]:.2f})" for f in report.drifted_features[:5])
            reasons.append(f"drift above PSI {threshold}: {worst}")
    return RetrainVerdict(bool(reasons), reasons, meta.version, age, report)
