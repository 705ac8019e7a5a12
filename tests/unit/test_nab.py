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
    (tmp_path / "c" / "f.csv").write_text("timestamp,value\n2026-01-01 00:00:00,1\n"
                                          "2026-01-01 00:05:00,2\n")
    (tmp_path / "w.json").write_text(json.dumps({"c/f.csv": [["2026-01-02 00:00:00.000000",
                                                              "2026-01-02 00:05:00.000000"]]}))
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
    result = CliRunner().invoke(app, ["ml", "evaluate-nab", "--data", str(NAB / "data"),
                                      "--windows", str(NAB / "combined_windows.json"),
                                      "--scores-out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    out = json.loads(result.output)
    print({k: out[k] for k in ("standard", "reward_low_FP_rate", "reward_low_FN_rate")})
    # Issue 6 asks for 65; the detector reaches 66.40 today. This guards what it reaches so
    # a change that loses ground fails here; raise it as the detector improves.
    assert out["standard"] >= 66
    assert out["reward_low_FP_rate"] > 0 and out["reward_low_FN_rate"] > out["standard"] - 20
    assert out["scores_written"] == 41
    assert len(list(tmp_path.rglob("*.csv"))) == 41
