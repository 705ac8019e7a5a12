"""The NAB scorer against its own definition, and the detector on the real NAB corpus."""

import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from opslake.cli import app
from opslake.errors import InputError
from opslake.ml import detect, nab

NAB = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "nab"
STANDARD = nab.PROFILES[0]


def _series(n: int, windows: list[tuple[int, int]], name: str = "x.csv") -> nab.LabelledSeries:
    stamps = np.datetime64("2026-01-01T00:00:00") + np.arange(n) * np.timedelta64(300, "s")
    return nab.LabelledSeries(name, stamps, np.zeros(n), windows)


def _hits(n: int, rows: list[int]) -> np.ndarray:
    s = np.zeros(n)
    s[rows] = 1.0
    return s


def _sig(p: float) -> float:
    return 2 / (1 + math.exp(5 * p)) - 1


@pytest.fixture(scope="module")
def corpus() -> list[nab.LabelledSeries]:
    return nab.load_corpus(NAB / "data", NAB / "combined_windows.json")


def test_null_scores_zero_and_perfect_scores_hundred_on_every_profile(corpus):
    scorer = nab.Scorer(corpus)
    null = scorer.score([np.zeros(len(s.values)) for s in corpus])
    perfect = scorer.score(scorer.perfect_scores())
    for profile in nab.PROFILES:
        assert null[profile.name].score == pytest.approx(0.0)
        assert perfect[profile.name].score == pytest.approx(100.0)
        assert perfect[profile.name].false_positives == 0
    assert scorer.window_count == 86


def test_detection_reward_follows_position_in_window():
    series = _series(200, [(100, 109)])  # probation: 30 rows
    scorer = nab.Scorer([series])
    for row, expected in [(100, 1.0), (105, _sig(-0.5) / _sig(-1.0)), (109, _sig(-0.1) / _sig(-1))]:
        _, raw = scorer.best([_hits(200, [row])], STANDARD)
        assert raw == pytest.approx(expected), row
    # Only the earliest detection of a window counts.
    _, raw = scorer.best([_hits(200, [105, 100, 109])], STANDARD)
    assert raw == pytest.approx(1.0)


def test_false_positives_cost_more_the_further_from_a_window():
    series = _series(200, [(100, 109)])
    scorer = nab.Scorer([series])
    s = _hits(200, [100, 50])  # a false alarm before any window: the full fp weight
    assert scorer.best([s], STANDARD)[1] == pytest.approx(1.0 - 0.11)
    s = _hits(200, [100, 113])  # 4 rows after a window of width 10: p = 4 / 9
    assert scorer.best([s], STANDARD)[1] == pytest.approx(1.0 + 0.11 * _sig(4 / 9))
    s = _hits(200, [100, 190])  # far behind the window: -1 × fp weight
    assert scorer.best([s], STANDARD)[1] == pytest.approx(1.0 - 0.11)
    s = _hits(200, [10])  # inside probation: never scored
    assert scorer.best([s], STANDARD)[1] == pytest.approx(-1.0)


def test_one_threshold_is_chosen_for_the_whole_corpus():
    a, b = _series(200, [(100, 109)], "a.csv"), _series(200, [(150, 159)], "b.csv")
    sa = np.zeros(200)
    sa[100] = 0.9
    sa[60] = 0.5  # a false alarm in a
    sb = np.zeros(200)
    sb[150] = 0.5  # b's window is found only at 0.5, which also admits a's false alarm
    threshold, raw = nab.Scorer([a, b]).best([sa, sb], STANDARD)
    assert threshold == pytest.approx(0.5)
    assert raw == pytest.approx(2.0 - 0.11)
    low_fn = nab.Scorer([a, b]).score([sa, sb])["reward_low_FN_rate"]
    assert low_fn.true_positives == 2 and low_fn.false_positives == 1


def test_scores_out_are_readable_by_another_scorer(tmp_path, corpus):
    some = corpus[:2]
    scores = [np.linspace(0, 1, len(s.values)) for s in some]
    paths = nab.write_scores(tmp_path, some, scores)
    with paths[1].open() as handle:
        rows = list(csv.reader(handle))
    assert rows[0] == ["timestamp", "value", "anomaly_score"]
    assert len(rows) == len(some[1].values) + 1
    assert float(rows[-1][2]) == pytest.approx(1.0)
    assert paths[1].relative_to(tmp_path).as_posix() == some[1].name


def test_a_window_edge_that_is_not_a_timestamp_is_refused(tmp_path):
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "f.csv").write_text(
        "timestamp,value\n2026-01-01 00:00:00,1\n2026-01-01 00:05:00,2\n"
    )
    (tmp_path / "w.json").write_text(
        json.dumps({"c/f.csv": [["2026-01-02 00:00:00.000000", "2026-01-02 00:05:00.000000"]]})
    )
    with pytest.raises(InputError, match="not a timestamp"):
        nab.load_corpus(tmp_path, tmp_path / "w.json")


def test_detector_is_causal_on_nab_series(corpus):
    series = next(s for s in corpus if s.name.endswith("nyc_taxi.csv"))
    whole = detect.score_series(series.timestamps, series.values)
    cut = 6000
    changed = series.values.copy()
    changed[cut:] = changed[cut:] * 3 + 1000
    prefix = detect.score_series(series.timestamps, changed)
    np.testing.assert_array_equal(whole[:cut], prefix[:cut])
    assert not np.array_equal(whole[cut:], prefix[cut:])


def test_evaluate_nab_prints_the_three_scores_and_holds_its_level(tmp_path):
    result = CliRunner().invoke(
        app,
        [
            "ml",
            "evaluate-nab",
            "--data",
            str(NAB / "data"),
            "--windows",
            str(NAB / "combined_windows.json"),
            "--scores-out",
            str(tmp_path),
            "--cv",
            "category",
        ],
    )
    assert result.exit_code == 0, result.output
    out = json.loads(result.output)
    print(
        {k: out[k] for k in ("standard", "reward_low_FP_rate", "reward_low_FN_rate")},
        out["cv_combined"],
    )
    # Issue 6 asked for 65 and the detector reached 66.40 (64.67 by leave-one-category-out);
    # issue 18's changes reach 72.46 (72.13). This guards what it reaches so a change that
    # loses ground fails here; raise it as the detector improves.
    assert out["standard"] >= 72
    assert out["cv_combined"]["standard"] >= 72
    assert len(out["cv"]["standard"]["folds"]) == 6
    assert out["reward_low_FP_rate"] > 0 and out["reward_low_FN_rate"] > out["standard"] - 20
    assert out["scores_written"] == 41
    assert len(list(tmp_path.rglob("*.csv"))) == 41


def _cv_corpus() -> tuple[list[nab.LabelledSeries], list[np.ndarray]]:
    """Four categories whose leave-one-out answer is known by construction.

    a: its window found at 0.9 and a false alarm at 0.5; b: its window found at 0.9; c: its
    window found only at 0.5; d: no window, one false alarm at 0.95.
    """
    corpus = [
        _series(200, [(100, 109)], "a/a.csv"),
        _series(200, [(100, 109)], "b/b.csv"),
        _series(200, [(100, 109)], "c/c.csv"),
        _series(200, [], "d/d.csv"),
    ]
    scores = [np.zeros(200) for _ in corpus]
    scores[0][[100, 50]] = [0.9, 0.5]
    scores[1][100] = 0.9
    scores[2][100] = 0.5
    scores[3][150] = 0.95
    return corpus, scores


def test_raw_at_a_threshold_matches_the_sweep():
    corpus, scores = _cv_corpus()
    scorer = nab.Scorer(corpus)
    threshold, raw = scorer.best(scores, STANDARD)
    assert threshold == pytest.approx(0.5)
    assert scorer.raw_at(scores, STANDARD, threshold) == pytest.approx(raw)
    assert scorer.raw_at(scores, STANDARD, 0.7) == pytest.approx(2.0 - 0.11 - 1.0)
    assert scorer.raw_at(scores, STANDARD, nab.NO_DETECTION) == pytest.approx(-3.0)


def test_leave_one_category_out_scores_each_category_at_the_others_threshold():
    corpus, scores = _cv_corpus()
    assert [nab.category(s) for s in corpus] == ["a", "b", "c", "d"]
    cv = nab.cross_validate(corpus, scores, profiles=[STANDARD])["standard"]
    folds = {f.group: f for f in cv.folds}
    # Held out a: b and c (and d) are best served at 0.5, which finds a's window and admits
    # its false alarm: 1 - 0.11 on a -1 … 1 scale.
    assert folds["a"].threshold == pytest.approx(0.5)
    assert folds["a"].raw == pytest.approx(0.89)
    assert folds["a"].score == pytest.approx(100 * 1.89 / 2)
    assert folds["b"].threshold == pytest.approx(0.5)
    assert folds["b"].score == pytest.approx(100.0)
    # Held out c: a and b are best at 0.9, where c's window (found only at 0.5) is missed.
    assert folds["c"].threshold == pytest.approx(0.9)
    assert folds["c"].score == pytest.approx(0.0)
    assert (folds["c"].true_positives, folds["c"].false_negatives) == (0, 1)
    # d has no window: no score of its own, but its false alarm at 0.95 costs in the total.
    assert folds["d"].windows == 0 and folds["d"].false_positives == 1
    assert folds["d"].raw == pytest.approx(-0.11)
    assert cv.raw == pytest.approx(0.89 + 1.0 - 1.0 - 0.11)
    assert cv.combined == pytest.approx(100 * (cv.raw + 3) / 6)
    # The plain score picks one threshold for all four and is higher here.
    plain = nab.Scorer(corpus).score(scores, [STANDARD])["standard"]
    assert plain.score == pytest.approx(100 * (3 - 0.22 + 3) / 6)
    assert plain.score > cv.combined


def test_cross_validation_needs_two_groups():
    series = _series(200, [(100, 109)], "a/a.csv")
    with pytest.raises(InputError, match="two groups"):
        nab.cross_validate([series], [np.zeros(200)])


def test_evaluate_nab_cv_category_prints_folds_and_combined(tmp_path):
    corpus, _ = _cv_corpus()
    rng = np.random.default_rng(0)
    windows = {}
    for s in corpus:
        path = tmp_path / "data" / s.name
        path.parent.mkdir(parents=True)
        values = rng.normal(10, 1, 200)
        values[100:104] += 20
        path.write_text(
            "timestamp,value\n"
            + "".join(
                f"{str(t).replace('T', ' ')},{v}\n"
                for t, v in zip(s.timestamps, values, strict=True)
            )
        )
        windows[s.name] = [
            [
                f"{str(s.timestamps[left]).replace('T', ' ')}.000000",
                f"{str(s.timestamps[right]).replace('T', ' ')}.000000",
            ]
            for left, right in s.windows
        ]
    (tmp_path / "w.json").write_text(json.dumps(windows))
    args = [
        "ml",
        "evaluate-nab",
        "--data",
        str(tmp_path / "data"),
        "--windows",
        str(tmp_path / "w.json"),
    ]
    plain = CliRunner().invoke(app, args)
    assert plain.exit_code == 0, plain.output
    assert "cv" not in json.loads(plain.output)
    result = CliRunner().invoke(app, [*args, "--cv", "category"])
    assert result.exit_code == 0, result.output
    out = json.loads(result.output)
    assert out["standard"] == json.loads(plain.output)["standard"]
    assert out["cv"]["by"] == "category"
    assert set(out["cv"]["standard"]["folds"]) == {"a", "b", "c", "d"}
    assert out["cv"]["standard"]["folds"]["d"]["score"] is None
    assert set(out["cv_combined"]) == {p.name for p in nab.PROFILES}
    refused = CliRunner().invoke(app, [*args, "--cv", "file"])
    assert refused.exit_code == 2
