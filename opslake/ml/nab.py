"""The Numenta Anomaly Benchmark (NAB): corpus loading and an exact implementation of its scorer.

NAB judges a detector that gives every row of a labelled series a score in [0, 1]. One
threshold, chosen to maximise the total over the whole corpus, turns scores into
detections. The first 15 % of each file (at most 750 rows) is probation and never scored.
Inside a labelled window only the earliest detection counts, earning more the earlier it
is (a scaled sigmoid of its relative position); a window with no detection costs the
profile's false-negative weight; a detection outside every window costs the false-positive
weight, less if it comes shortly after a window. The reported figure is normalised so that
detecting nothing scores 0 and detecting every window at its left edge scores 100.

The sweep over thresholds is vectorised: each window contributes a step function of the
threshold (its earliest detection moves left as the threshold falls) and each row outside
the windows a constant once it is detected, so every candidate threshold is scored with one
sort and one cumulative sum.

``cross_validate`` checks that the threshold is not fitted to the corpus: leave one group
out (NAB's category folders), choose the threshold on the rest, score the group at it.
"""

import csv
import json
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from opslake.errors import ConfigError, InputError

PROBATION_SHARE = 0.15
PROBATION_MAX_ROWS = 750
#: Above every score a detector can give: the threshold at which nothing is detected.
NO_DETECTION = 1.1


@dataclass(frozen=True)
class Profile:
    """A NAB cost matrix: what a true positive earns and a miss or a false alarm costs."""

    name: str
    tp: float
    fp: float
    fn: float


PROFILES = (
    Profile("standard", tp=1.0, fp=0.11, fn=1.0),
    Profile("reward_low_FP_rate", tp=1.0, fp=0.22, fn=1.0),
    Profile("reward_low_FN_rate", tp=1.0, fp=0.11, fn=2.0),
)


@dataclass
class LabelledSeries:
    """One NAB file: its rows and its anomaly windows as inclusive row ranges."""

    name: str
    timestamps: np.ndarray
    values: np.ndarray
    windows: list[tuple[int, int]] = field(default_factory=list)

    @property
    def probation(self) -> int:
        """Rows at the start that NAB never scores."""
        return probation_rows(len(self.values))


def probation_rows(n: int) -> int:
    """NAB's probationary period: 15 % of the rows, at most 750."""
    return min(math.floor(PROBATION_SHARE * n), PROBATION_MAX_ROWS)


def scaled_sigmoid(position: np.ndarray) -> np.ndarray:
    """NAB's reward curve: +1 far before a window's right edge, −1 well after it."""
    position = np.asarray(position, dtype=float)
    value = 2.0 / (1.0 + np.exp(5.0 * position)) - 1.0
    return np.where(position > 3.0, -1.0, value)


#: The reward at a window's left edge; rewards are scaled so that it earns the tp weight.
MAX_TP = float(scaled_sigmoid(np.array(-1.0)))


def read_series(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """A ``timestamp,value`` CSV as (datetime64[s] array, float array)."""
    try:
        with path.open(newline="") as handle:
            rows = list(csv.reader(handle))
    except OSError as exc:
        raise InputError(f"cannot read {path}: {exc}; check the --data directory") from exc
    if not rows or [c.strip() for c in rows[0][:2]] != ["timestamp", "value"]:
        raise InputError(f"{path}: the header must be 'timestamp,value' (NAB format)")
    try:
        stamps = np.array([r[0].strip() for r in rows[1:]], dtype="datetime64[s]")
        values = np.array([float(r[1]) for r in rows[1:]], dtype=float)
    except (ValueError, IndexError) as exc:
        raise InputError(
            f"{path}: a row is not 'timestamp,value' ({exc}); fix or remove it"
        ) from exc
    return stamps, values


def load_corpus(data_dir: Path, windows_file: Path) -> list[LabelledSeries]:
    """Every CSV named in the windows file, with its windows mapped to row ranges."""
    try:
        labels = json.loads(Path(windows_file).read_text())
    except (OSError, ValueError) as exc:
        raise ConfigError(
            f"cannot read the windows file {windows_file}: {exc}; give NAB's combined_windows.json"
        ) from exc
    corpus = []
    for name in sorted(labels):
        path = Path(data_dir) / name
        if not path.is_file():
            raise ConfigError(
                f"{windows_file} names {name} but {path} does not exist; "
                "point --data at the folder that holds NAB's category folders"
            )
        stamps, values = read_series(path)
        windows = []
        for start, end in labels[name]:
            left, right = _row_of(stamps, start, name), _row_of(stamps, end, name)
            if left > right:
                raise InputError(f"{name}: window {start} … {end} holds no row")
            windows.append((left, right))
        corpus.append(LabelledSeries(name, stamps, values, windows))
    if not corpus:
        raise ConfigError(f"{windows_file} names no file")
    return corpus


def _row_of(stamps: np.ndarray, stamp: str, name: str) -> int:
    """The first row with this exact timestamp, as NAB finds window edges.

    NAB's files are in row order, not strictly time order (a clock change repeats an hour in
    one of them), so rows are never sorted and edges are matched exactly.
    """
    hits = np.flatnonzero(stamps == np.datetime64(stamp[:19]))
    if not len(hits):
        raise InputError(
            f"{name}: window edge {stamp} is not a timestamp of the file; "
            "use the windows file that belongs to this data"
        )
    return int(hits[0])


@dataclass(frozen=True)
class _RowRewards:
    """Per row of one file: which window it is in (−1 none, −2 probation) and its reward."""

    window: np.ndarray
    reward: np.ndarray


def _row_rewards(n: int, windows: Sequence[tuple[int, int]]) -> _RowRewards:
    """NAB's per-row sweep values before weighting (true-positive or false-positive curve)."""
    window = np.full(n, -1, dtype=np.int64)
    reward = np.full(n, -1.0)  # before any window: the full false-positive cost
    idx = np.arange(n)
    for k, (left, right) in enumerate(windows):
        width = right - left + 1
        inside = slice(left, right + 1)
        window[inside] = k
        reward[inside] = scaled_sigmoid(-(right - idx[inside] + 1) / width)
        nxt = windows[k + 1][0] if k + 1 < len(windows) else n
        after = slice(right + 1, nxt)
        reward[after] = scaled_sigmoid(np.abs(right - idx[after]) / max(width - 1, 1))
    window[: probation_rows(n)] = -2
    return _RowRewards(window, reward)


@dataclass(frozen=True)
class ProfileResult:
    """A profile's outcome: the normalised score and what produced it."""

    profile: str
    score: float
    threshold: float
    raw: float
    null: float
    perfect: float
    true_positives: int
    false_positives: int
    false_negatives: int

    def as_dict(self) -> dict[str, object]:
        """JSON-friendly form, rounded for reading."""
        return {
            "score": round(self.score, 2),
            "threshold": round(self.threshold, 6),
            **_counts(self),
        }


class Scorer:
    """Scores detectors on one corpus under NAB's rules (threshold optimised per profile)."""

    def __init__(self, corpus: Sequence[LabelledSeries]) -> None:
        self.corpus = list(corpus)
        self._rows = [_row_rewards(len(s.values), s.windows) for s in self.corpus]
        # A window wholly inside probation can be neither found nor missed.
        self._counted = [sorted({int(w) for w in r.window[r.window >= 0]}) for r in self._rows]

    @property
    def window_count(self) -> int:
        """Windows that count (those not wholly inside probation)."""
        return sum(len(c) for c in self._counted)

    def perfect_scores(self) -> list[np.ndarray]:
        """The perfect detector: 1 at each window's first scorable row, 0 elsewhere."""
        out = []
        for rows in self._rows:
            scores = np.zeros(len(rows.window))
            for k in np.unique(rows.window[rows.window >= 0]):
                scores[np.flatnonzero(rows.window == k)[0]] = 1.0
            out.append(scores)
        return out

    def _sweep(
        self, scores: Sequence[np.ndarray], profile: Profile
    ) -> tuple[np.ndarray, np.ndarray]:
        """Every candidate threshold (descending) and the corpus total at each."""
        thresholds, deltas = [], []
        for rows, s in zip(self._rows, scores, strict=True):
            s = np.clip(np.nan_to_num(np.asarray(s, dtype=float), nan=0.0), 0.0, 1.0)
            if len(s) != len(rows.window):
                raise InputError(f"a detector gave {len(s)} scores for {len(rows.window)} rows")
            outside = rows.window == -1
            thresholds.append(s[outside])
            deltas.append(profile.fp * rows.reward[outside])
            for k in np.unique(rows.window[rows.window >= 0]):
                in_w = np.flatnonzero(rows.window == k)
                ws, wr = s[in_w], rows.reward[in_w]
                # Row j becomes the window's earliest detection once the threshold falls to
                # its score, if every earlier row of the window scored lower.
                prev_max = np.concatenate(([-np.inf], np.maximum.accumulate(ws)[:-1]))
                ev = np.flatnonzero(ws > prev_max)[::-1]
                values = profile.tp * wr[ev] / MAX_TP
                steps = np.diff(np.concatenate(([-profile.fn], values)))
                thresholds.append(ws[ev])
                deltas.append(steps)
        thr = np.concatenate(thresholds)
        dl = np.concatenate(deltas)
        order = np.argsort(-thr, kind="stable")
        thr, total = thr[order], np.cumsum(dl[order])
        # The total at threshold t includes every item scored >= t: last of each tie group.
        last = np.flatnonzero(np.append(thr[1:] != thr[:-1], True))
        base = -profile.fn * self.window_count
        return (
            np.concatenate(([NO_DETECTION], thr[last])),
            np.concatenate(([base], base + total[last])),
        )

    def raw_at(self, scores: Sequence[np.ndarray], profile: Profile, threshold: float) -> float:
        """The corpus' raw total when every score at or above ``threshold`` is a detection."""
        thr, total = self._sweep(scores, profile)
        # ``thr`` descends from NO_DETECTION: the last candidate still >= threshold.
        i = int(np.searchsorted(-thr, -threshold, side="right")) - 1
        return float(total[max(i, 0)])

    def _counts(self, scores: Sequence[np.ndarray], threshold: float) -> tuple[int, int, int]:
        """(true positives, false positives, false negatives) at ``threshold``."""
        tp = fp = fn = 0
        for rows, s in zip(self._rows, scores, strict=True):
            hit = np.nan_to_num(np.asarray(s, dtype=float), nan=0.0) >= threshold
            fp += int((hit & (rows.window == -1)).sum())
            for k in np.unique(rows.window[rows.window >= 0]):
                found = bool(hit[rows.window == k].any())
                tp, fn = tp + found, fn + (not found)
        return tp, fp, fn

    def best(self, scores: Sequence[np.ndarray], profile: Profile) -> tuple[float, float]:
        """The corpus-optimal threshold and the raw total it gives."""
        thr, total = self._sweep(scores, profile)
        i = int(np.argmax(total))
        return float(thr[i]), float(total[i])

    def score(
        self, scores: Sequence[np.ndarray], profiles: Iterable[Profile] = PROFILES
    ) -> dict[str, ProfileResult]:
        """Normalised NAB score of ``scores`` (one array per file, in corpus order)."""
        results = {}
        perfect_scores = self.perfect_scores()
        for profile in profiles:
            threshold, raw = self.best(scores, profile)
            null = -profile.fn * self.window_count
            perfect = self.best(perfect_scores, profile)[1]
            span = perfect - null
            normalised = 100.0 * (raw - null) / span if span else 0.0
            tp, fp, fn = self._counts(scores, threshold)
            results[profile.name] = ProfileResult(
                profile.name, normalised, threshold, raw, null, perfect, tp, fp, fn
            )
        return results


def run_detector(
    corpus: Sequence[LabelledSeries], detector: Callable[[np.ndarray, np.ndarray], np.ndarray]
) -> list[np.ndarray]:
    """Each file's scores from ``detector(timestamps, values)``, one file at a time."""
    return [np.asarray(detector(s.timestamps, s.values), dtype=float) for s in corpus]


def write_scores(
    out_dir: Path, corpus: Sequence[LabelledSeries], scores: Sequence[np.ndarray]
) -> list[Path]:
    """Per-row scores as ``timestamp,value,anomaly_score`` CSVs under the files' own paths."""
    written = []
    for series, s in zip(corpus, scores, strict=True):
        path = Path(out_dir) / series.name
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("w", newline="") as handle:
            out = csv.writer(handle)
            out.writerow(["timestamp", "value", "anomaly_score"])
            for ts, v, a in zip(series.timestamps, series.values, s, strict=True):
                out.writerow([str(ts).replace("T", " "), repr(float(v)), f"{float(a):.6f}"])
        written.append(path)
    return written


def category(series: LabelledSeries) -> str:
    """A file's NAB category: the folder it sits in (``realKnownCause/x.csv`` → realKnownCause)."""
    parts = Path(series.name).parts
    return parts[0] if len(parts) > 1 else ""


@dataclass(frozen=True)
class FoldResult:
    """One held-out group: the threshold chosen on the others and what it gives here."""

    group: str
    files: int
    windows: int
    threshold: float
    score: float
    raw: float
    null: float
    perfect: float
    true_positives: int
    false_positives: int
    false_negatives: int

    def as_dict(self) -> dict[str, object]:
        """JSON-friendly form, rounded for reading."""
        return {
            "files": self.files,
            "windows": self.windows,
            "threshold": round(self.threshold, 6),
            "score": round(self.score, 2) if self.windows else None,
            **_counts(self),
        }


@dataclass(frozen=True)
class CrossValidation:
    """Leave-one-group-out NAB scores for one profile."""

    profile: str
    folds: list[FoldResult]
    combined: float
    raw: float
    null: float
    perfect: float

    def as_dict(self) -> dict[str, object]:
        """JSON-friendly form, rounded for reading."""
        return {
            "combined": round(self.combined, 2),
            "raw": round(self.raw, 4),
            "null": round(self.null, 4),
            "perfect": round(self.perfect, 4),
            "folds": {f.group: f.as_dict() for f in self.folds},
        }


def _counts(result: ProfileResult | FoldResult) -> dict[str, object]:
    """The raw, null and perfect totals and the detection counts of a result, rounded."""
    return {
        "raw": round(result.raw, 4),
        "null": round(result.null, 4),
        "perfect": round(result.perfect, 4),
        "true_positives": result.true_positives,
        "false_positives": result.false_positives,
        "false_negatives": result.false_negatives,
    }


def _normalise(raw: float, null: float, perfect: float) -> float:
    """NAB's 0 (detect nothing) … 100 (every window at its left edge) scale."""
    span = perfect - null
    return 100.0 * (raw - null) / span if span else 0.0


def cross_validate(
    corpus: Sequence[LabelledSeries],
    scores: Sequence[np.ndarray],
    group: Callable[[LabelledSeries], str] = category,
    profiles: Iterable[Profile] = PROFILES,
) -> dict[str, CrossValidation]:
    """Leave-one-group-out: each group scored at the threshold that is best on the others.

    The threshold is the one the plain evaluation would choose (``Scorer.best``) on every
    file outside the group; the group's files are then scored at it. The combined figure
    adds every group's raw total at its own held-out threshold and normalises by the whole
    corpus' null and perfect totals, so it reads on the same scale as the plain score (which
    equals it when one threshold is best for every fold). A group without windows (NAB's
    artificialNoAnomaly) has no score of its own but its false alarms count in the combined.
    """
    corpus, scores = list(corpus), list(scores)
    if len(corpus) != len(scores):
        raise InputError(f"{len(scores)} score arrays for {len(corpus)} files")
    names = [group(s) for s in corpus]
    groups = sorted(set(names))
    if len(groups) < 2:
        raise InputError(f"cross-validation needs at least two groups; found {groups}")
    out = {}
    for profile in profiles:
        folds = []
        for g in groups:
            inside = [i for i, n in enumerate(names) if n == g]
            others = [i for i, n in enumerate(names) if n != g]
            threshold, _ = Scorer([corpus[i] for i in others]).best(
                [scores[i] for i in others], profile
            )
            held = Scorer([corpus[i] for i in inside])
            held_scores = [scores[i] for i in inside]
            raw = held.raw_at(held_scores, profile, threshold)
            null = -profile.fn * held.window_count
            perfect = held.best(held.perfect_scores(), profile)[1]
            tp, fp, fn = held._counts(held_scores, threshold)
            folds.append(
                FoldResult(
                    g,
                    len(inside),
                    held.window_count,
                    threshold,
                    _normalise(raw, null, perfect),
                    raw,
                    null,
                    perfect,
                    tp,
                    fp,
                    fn,
                )
            )
        raw = sum(f.raw for f in folds)
        null = sum(f.null for f in folds)
        perfect = sum(f.perfect for f in folds)
        out[profile.name] = CrossValidation(
            profile.name, folds, _normalise(raw, null, perfect), raw, null, perfect
        )
    return out
