"""The single-metric anomaly detector: causal, seasonality-aware, one pass over many series.

Every series keeps a small state (running level and spread, a per-phase daily profile, a
histogram of how surprising each of its past points was, and its recent scores) and each
new time step updates the states of all series at once, so scoring costs the same whether
it runs over a year of history or one newly landed minute (the streaming path saves the
state and carries on). A score at time t uses only points up to t.

Four surprises are measured per point: how far it lies from the running level (an EWMA
z-score), how far it lies from what the same time of day looked like before (a z-score of
the residual against an EWMA daily profile, once a full day has been seen), and, for each
of these two, a sustained shift (a fast EWMA of the deviations against its own spread, so a
level shift or a day running low registers before any single point is extreme). Each is
calibrated against the series' own history: with ``n`` earlier points of which ``k`` were
at least as surprising, the score is ``log((n+1)/(k+1)) / log(n+2)``, so 1 means "more
surprising than anything this series has done" and 0.5 means "as rare as one point in
√n"; it is capped by ``1 - log(k+1)/log(horizon)`` so that in a long history a point must
also be among the few most surprising events ever seen, not only a small share of them.
Because the scale is each series' own, one threshold means the same rarity for a noisy
tweet count and a flat temperature. The z-scores are counted on a scale that stops at
``z_cap`` (every point beyond it ties, so among the extremes rarity is counted in events, not
in how far out each lies), except that a new record beyond the cap is still a record; their
rarity is also capped by what a normal tail says of the same z (``gauss_cap``), so a record
of a short history that is only a 3-sigma wobble stays ordinary. The seasonal residual is
corrected by what the same hour of the week left over in earlier weeks (``week_alpha``), so a
weekday as quiet as a weekend stands out and weekends do not. A fifth calibrated feature is
the value's density: how rarely the series has been at this value (hashed bins of
``density_width`` running spreads, fixed once the series is warm), so a level never visited
is new however the running level has moved, quantised and flat series with rare steps
between known levels stay calm, and a level shift becomes the new normal as the series stays
there. Two novelty features join them: the raw deviation from
the running level and the raw seasonal residual, each ranked among the ``novelty_k``
largest earlier ones in the same direction and calibrated the same way (a record on the
series' own unnormalised scale, so a series whose spread has just grown cannot make a
routine excursion look new, and a long-forgotten extreme still counts). Each of the five
calibrated features is damped unless it beats its own previous ``feature_suppress`` scores, so
a feature that is already reporting an episode (a burst, a spread that keeps growing) adds
little while another can still speak. The features are combined by their cubic mean (a
point surprising to several features beats one surprising to a single feature, such as a
spike that recurs daily), and a score that does not exceed the previous ``suppress``
scores is damped, so a long incident alerts once rather than on every point.
"""

import math
from dataclasses import dataclass, field

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view
from scipy.ndimage import maximum_filter1d
from scipy.special import log_ndtr

from opslake.errors import InputError

DAY_S = 86_400
#: Time steps scored together, and the pairwise comparisons allowed per chunk.
CHUNK = 128
PAIRWISE_BUDGET = 4_000_000
#: Calibrated z-score features: level, seasonal residual, and a sustained shift of each (the
#: value density, a fifth calibrated feature, keeps its own arrays so states saved before it
#: existed keep their shapes).
N_FEATURES = 4
#: Columns kept of each feature's recent scores (at least ``feature_suppress``): fixed so a
#: saved state keeps its shape when the window changes.
RECENT_KEPT = 500
#: Novelty features: the raw level deviation and the raw seasonal residual.
N_NOVELTY = 2


@dataclass(frozen=True)
class DetectorConfig:
    """The one configuration used everywhere (NAB, the estate, the streaming path)."""

    level_alpha: float = 0.01
    season_alpha: float = 0.1
    bins_per_e: int = 20
    bins: int = 100
    suppress: int = 20
    damp: float = 0.6
    warmup: int = 100
    period_s: int = DAY_S
    #: Speed of the sustained-shift features (fast EWMA of the deviations); 0 disables them.
    shift_alpha: float = 0.05
    #: Features are combined by this power mean (3: cubic mean; ``inf``: the largest).
    combine_power: float = 3.0
    #: A point among more than ``horizon`` at least as surprising ones scores 0 however long
    #: the history (rarity counted in events, not only as a share of the history); 0: off.
    horizon: int = 2000
    #: Novelty: rank of the raw deviation among the ``novelty_k`` largest ones ever seen in
    #: the same direction (level deviation and seasonal residual); 0 disables it.
    novelty_k: int = 32
    #: A calibrated feature's score is damped (by ``damp``) unless it beats that feature's
    #: previous ``feature_suppress`` scores; 0 disables it.
    feature_suppress: int = 450
    #: Value density: how rarely the series has been at this value before. Values fall in
    #: bins ``density_width`` running spreads wide (the spread frozen once the series is
    #: warm), counted per series in ``density_slots`` hashed slots; the surprisal of the
    #: point's bin (and its two neighbours) is calibrated like the z-scores. A level never
    #: visited is new however the running level has moved, and stops being new as the series
    #: stays there (a level shift that becomes the new normal). 0 slots: off. 1,024 slots
    #: of int32 keep 4 KB per series (4,096 of int64 were 32 KB: 2.3 GB of state for a
    #: province's 70,000 series); 1,024, 4,096 and 16,384 give the same NAB scores.
    density_slots: int = 1024
    density_width: float = 0.35
    #: A z-score feature's rarity is capped by what a normal tail says of the same z:
    #: ``-log10 P(|N(0,1)| >= |z|) / gauss_cap``; 0: off.
    gauss_cap: float = 8.0
    #: Every ``|z|`` beyond this is as surprising as this (one histogram bin), so among the
    #: extreme points of a series rarity is counted in events, not in how far out each one
    #: lies; 0: off (the histogram's last bin still ends the scale).
    z_cap: float = 11.0
    #: Weekly pattern: the seasonal residual is also judged against what the same hour of
    #: the week (``week_bin_s`` bins) left over in earlier weeks, an EWMA over weeks with
    #: this weight starting from zero (so one week moves it only part of the way); 0: off.
    week_alpha: float = 0.3
    week_bin_s: int = 3_600

    @property
    def recent_kept(self) -> int:
        """Columns kept of each feature's recent scores."""
        return max(RECENT_KEPT, self.feature_suppress)

    @property
    def week_bins(self) -> int:
        """Bins of the weekly residual profile (hours of the week by default)."""
        return max(1, 7 * DAY_S // max(self.week_bin_s, 1))

    def season_length(self, step_s: float) -> int:
        """Samples per seasonal period at this step (0 when too coarse to be seasonal)."""
        n = round(self.period_s / step_s) if step_s > 0 else 0
        return n if n >= 4 else 0


def infer_step(timestamps: np.ndarray) -> float:
    """The typical spacing of a series in seconds (median of the positive gaps)."""
    secs = np.asarray(timestamps).astype("datetime64[s]").astype(np.int64)
    gaps = np.diff(secs)
    gaps = gaps[gaps > 0]
    if not len(gaps):
        raise InputError("a series needs at least two distinct timestamps to infer its step")
    return float(np.median(gaps))


@dataclass
class DetectorState:
    """Everything the detector remembers about ``n_series`` series between calls."""

    step_s: float
    season: int
    seen: np.ndarray
    level_mean: np.ndarray
    level_var: np.ndarray
    profile: np.ndarray
    profile_seen: np.ndarray
    resid_mean: np.ndarray
    resid_var: np.ndarray
    shift_mean: np.ndarray
    shift_var: np.ndarray
    counts: np.ndarray
    recent: np.ndarray
    last_value: np.ndarray
    nov_top: np.ndarray
    nov_seen: np.ndarray
    feature_recent: np.ndarray
    z_top: np.ndarray
    density_w: np.ndarray
    density_counts: np.ndarray
    density_hist: np.ndarray
    density_recent: np.ndarray
    week_profile: np.ndarray
    week_acc: np.ndarray
    week_bin: np.ndarray
    config: DetectorConfig = field(default_factory=DetectorConfig)

    @classmethod
    def new(
        cls, n_series: int, step_s: float, config: DetectorConfig | None = None
    ) -> "DetectorState":
        """Empty state for ``n_series`` series sampled every ``step_s`` seconds."""
        config = config or DetectorConfig()
        season = config.season_length(step_s)
        return cls(
            step_s=step_s,
            season=season,
            seen=np.zeros(n_series, dtype=np.int64),
            level_mean=np.full(n_series, np.nan),
            level_var=np.zeros(n_series),
            profile=np.zeros((n_series, max(season, 1))),
            profile_seen=np.zeros((n_series, max(season, 1)), dtype=bool),
            resid_mean=np.zeros(n_series),
            resid_var=np.zeros(n_series),
            shift_mean=np.zeros((n_series, 2)),
            shift_var=np.zeros((n_series, 2)),
            counts=np.zeros((n_series, N_FEATURES, config.bins), dtype=np.int64),
            recent=np.zeros((n_series, config.suppress)),
            last_value=np.full(n_series, np.nan),
            nov_top=np.full((n_series, N_NOVELTY, 2, max(config.novelty_k, 1)), -np.inf),
            nov_seen=np.zeros((n_series, N_NOVELTY), dtype=np.int64),
            feature_recent=np.zeros((n_series, N_FEATURES, config.recent_kept)),
            z_top=np.zeros((n_series, N_FEATURES)),
            density_w=np.full(n_series, np.nan),
            density_counts=np.zeros((n_series, max(config.density_slots, 1)), dtype=np.int32),
            density_hist=np.zeros((n_series, config.bins), dtype=np.int64),
            density_recent=np.zeros((n_series, config.recent_kept)),
            week_profile=np.zeros((n_series, config.week_bins)),
            week_acc=np.zeros((n_series, 2)),
            week_bin=np.full(n_series, -1, dtype=np.int64),
            config=config,
        )

    @property
    def n_series(self) -> int:
        """How many series this state follows."""
        return len(self.seen)


def _ewm(x: np.ndarray, alpha: float, last: np.ndarray) -> np.ndarray:
    """EWMA of each row of ``x`` continuing from ``last`` (one value per series)."""
    # Imported when first scored: scipy.signal adds ~0.3 s (beyond the scipy sklearn loads)
    # to every process that loads the definitions (each CLI call, `opslake serve`, each run).
    from scipy.signal import lfilter

    out, _ = lfilter([alpha], [1.0, alpha - 1.0], x, axis=1, zi=((1 - alpha) * last)[:, None])
    return out


def _ewm_held(x: np.ndarray, alpha: float, last: np.ndarray, on: np.ndarray) -> np.ndarray:
    """Like :func:`_ewm`, but the average stays put (is not updated) where ``on`` is False.

    Holding inside the recurrence, not by feeding the chunk's starting value, keeps a series
    with gaps scoring the same however it is split into calls.
    """
    if on.all():
        return _ewm(x, alpha, last)
    out = np.empty_like(x)
    v = np.asarray(last, dtype=float)
    for j in range(x.shape[1]):
        # The same arithmetic as lfilter's recurrence, so gapless stretches agree exactly.
        v = np.where(on[:, j], alpha * x[:, j] + (1.0 - alpha) * v, v)
        out[:, j] = v
    return out


def _previous(series: np.ndarray, before: np.ndarray) -> np.ndarray:
    """Each column's value one step earlier (``before`` for the first column)."""
    return np.concatenate([before[:, None], series[:, :-1]], axis=1)


def _surprise(
    z: np.ndarray,
    counts: np.ndarray,
    active: np.ndarray,
    config: DetectorConfig,
    is_z: bool = True,
    top: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Calibrated rarity of ``|z|`` against each series' own past, and where it is informed.

    A feature with fewer than ``warmup`` earlier points has no past to be rare against: it
    is left out of the combination there rather than counted as unsurprising (after a gap the
    seasonal residual may have no history yet on the day while the level has plenty).
    ``is_z``: ``z`` is a z-score, so ``z_cap`` and ``gauss_cap`` apply (not to the density's
    surprisal); ``top`` holds the feature's largest informed ``|z|`` so far (records beyond
    ``z_cap``). Updates the histogram (and ``top``).
    """
    mag = np.minimum(np.abs(z), config.z_cap) if config.z_cap and is_z else np.abs(z)
    b = np.clip((np.log1p(mag) * config.bins_per_e).astype(np.int64), 0, config.bins - 1)
    n_before = counts.sum(axis=1)[:, None]
    suffix = np.cumsum(counts[:, ::-1], axis=1)[:, ::-1]
    at_least = np.take_along_axis(suffix, b, axis=1)
    # Earlier points of this same chunk count too: pairwise, strictly earlier, active only.
    earlier = np.tril(np.ones((z.shape[1], z.shape[1]), dtype=bool), -1)
    ge = (b[:, None, :] >= b[:, :, None]) & earlier[None] & active[:, None, :]
    at_least = at_least + ge.sum(axis=2)
    n = n_before + np.cumsum(active, axis=1) - active
    if top is not None and config.z_cap and is_z:
        # A record beyond the cap is still a record: nothing earlier (once the feature was
        # informed; the first points of a series have no spread yet) was as far out.
        mags = np.where(active & (n >= config.warmup), np.abs(z), 0.0)
        before = _previous(np.maximum.accumulate(mags, axis=1), top)
        before = np.maximum(before, top[:, None])
        at_least = np.where((mags > before) & (mag >= config.z_cap), 0, at_least)
        top[:] = np.maximum(top, mags.max(axis=1, initial=0.0))
    score = np.log((n + 1.0) / (at_least + 1.0)) / np.log(n + 2.0)
    if config.horizon:
        score = np.clip(
            np.minimum(score, 1.0 - np.log(at_least + 1.0) / np.log(config.horizon)), 0.0, 1.0
        )
    if config.gauss_cap and is_z:
        score = np.minimum(score, _gauss_score(z, config.gauss_cap))
    rows = np.broadcast_to(np.arange(len(z))[:, None], z.shape)
    np.add.at(counts, (rows[active], b[active]), 1)
    return np.where(active, score, 0.0), active & (n >= config.warmup)


def _gauss_score(z: np.ndarray, cap: float) -> np.ndarray:
    """``-log10 P(|N(0,1)| >= |z|) / cap`` in [0, 1]: how rare ``z`` is for a normal tail."""
    tail = -(np.log(2.0) + log_ndtr(-np.abs(z))) / math.log(10.0)
    return np.clip(tail / cap, 0.0, 1.0)


def _novelty(
    state: DetectorState, i: int, dev: np.ndarray, active: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Calibrated rarity of the raw deviation ``dev`` among the largest ones on its side.

    ``k`` counts the earlier deviations in the same direction at least as large, exactly up
    to ``novelty_k`` (only that many are kept per side), and is calibrated as in
    ``_surprise``. Updates the kept deviations.
    """
    cfg = state.config
    K = cfg.novelty_k
    top = state.nov_top[:, i]
    mag = np.abs(dev)
    neg = dev < 0
    stored = np.where(
        neg,
        np.count_nonzero(top[:, 1][:, None, :] >= mag[:, :, None], axis=2),
        np.count_nonzero(top[:, 0][:, None, :] >= mag[:, :, None], axis=2),
    )
    # Earlier points of this same chunk count too: active, same side, at least as far out.
    sign = np.where(neg, -1.0, 1.0)
    earlier = np.triu(np.ones((dev.shape[1], dev.shape[1]), dtype=bool), 1)
    past = np.where(active, dev, np.nan)
    ge = (past[:, :, None] * sign[:, None, :] >= mag[:, None, :]) & earlier[None]
    k = np.minimum(stored + np.count_nonzero(ge, axis=1), K)
    n = state.nov_seen[:, i][:, None] + np.cumsum(active, axis=1) - active
    score = np.log((n + 1.0) / (k + 1.0)) / np.log(n + 2.0)
    if cfg.horizon:
        score = np.minimum(score, 1.0 - np.log(k + 1.0) / np.log(cfg.horizon))
    score = np.clip(np.where(active & (dev != 0), score, 0.0), 0.0, 1.0)
    for side, on in ((0, active & ~neg), (1, active & neg)):
        kept = np.concatenate([top[:, side], np.where(on, mag, -np.inf)], axis=1)
        state.nov_top[:, i, side] = np.partition(kept, kept.shape[1] - K, axis=1)[:, -K:]
    state.nov_seen[:, i] = n[:, -1] + active[:, -1]
    return score, active & (n >= cfg.warmup)


def _feature_suppress(
    state: DetectorState, feats: dict[int, tuple[np.ndarray, np.ndarray]]
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Each calibrated feature damped where it does not beat its own previous scores."""
    cfg = state.config
    if not cfg.feature_suppress:
        return list(feats.values())
    out = []
    for slot, (f, active) in feats.items():
        fa = np.where(active, f, 0.0)
        kept = state.density_recent if slot == N_FEATURES else state.feature_recent[:, slot]
        before = _window_max(kept[:, kept.shape[1] - cfg.feature_suppress :], fa)
        kept[:] = np.concatenate([kept, fa], axis=1)[:, -kept.shape[1] :]
        out.append((np.where(fa > before, f, f * cfg.damp), active))
    return out


def _window_max(recent: np.ndarray, x: np.ndarray) -> np.ndarray:
    """For each column of ``x``, the largest of the ``recent.shape[1]`` values before it."""
    k, t = recent.shape[1], x.shape[1]
    if t > k:
        trail = np.concatenate([recent, x], axis=1)
        return maximum_filter1d(trail, k, axis=1, origin=(k - 1) // 2)[:, k - 1 : -1]
    # A long window is mostly the same for the whole chunk: reduce that part once, and take
    # running maxima only of the few values that leave it and the chunk's own values.
    leaving = np.maximum.accumulate(recent[:, t - 1 :: -1], axis=1)[:, ::-1]
    staying = recent[:, t:].max(axis=1, initial=-np.inf)[:, None]
    chunk = _previous(np.maximum.accumulate(x, axis=1), np.full(len(x), -np.inf))
    return np.maximum(np.maximum(leaving, staying), chunk)


def _combine(feats: list[tuple[np.ndarray, np.ndarray]], power: float) -> np.ndarray:
    """Power mean of the active features' calibrated scores (``inf`` = the largest).

    A power mean above 1 rewards a point that several features find surprising over one that
    only a single feature does (a daily-recurring spike is surprising to the level but not
    to the seasonal residual), while one very surprising feature still scores high.
    """
    sc = np.stack([np.where(a, f, 0.0) for f, a in feats])
    if np.isinf(power):
        return sc.max(axis=0)
    n = np.maximum(np.stack([a for _, a in feats]).sum(axis=0), 1)
    return ((sc**power).sum(axis=0) / n) ** (1.0 / power)


def _shift(
    state: DetectorState, i: int, dev: np.ndarray, active: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Calibrated rarity of a sustained shift: a fast EWMA of ``dev`` against its own spread."""
    cfg = state.config
    m = _ewm(dev, cfg.shift_alpha, state.shift_mean[:, i])
    v = _ewm_held(m * m, cfg.level_alpha, state.shift_var[:, i], active)
    prev_v = _previous(v, state.shift_var[:, i])
    z = np.where(prev_v > 0, m / np.sqrt(np.maximum(prev_v, 1e-300)), 0.0)
    state.shift_mean[:, i] = m[:, -1]
    state.shift_var[:, i] = v[:, -1]
    return _surprise(z, state.counts[:, 2 + i], active, cfg, top=state.z_top[:, 2 + i])


def _density(
    state: DetectorState, held: np.ndarray, var: np.ndarray, seen: np.ndarray, ok: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Calibrated rarity of the value's bin among the series' earlier values.

    The bin width is fixed at the point where the series has ``warmup`` samples (or at the
    first sample of a state saved before this feature existed): that point's running spread
    times ``density_width`` (a flat series falls back to a millionth of its level, at least
    1e-6, so any step is a new bin). Points from then on are binned and
    counted; ``k`` is how many earlier ones fell in the same bin or a neighbour, ``n`` how
    many were counted, and the surprisal ``log((n+1)/(k+1))`` is calibrated by ``_surprise``.
    """
    cfg = state.config
    H = cfg.density_slots
    t = held.shape[1]
    cols = np.arange(t)[None, :]
    fresh = ~np.isfinite(state.density_w)
    crossing = fresh[:, None] & ok & (seen >= cfg.warmup)
    has = crossing.any(axis=1)
    at = np.where(has, crossing.argmax(axis=1), t)
    rows = np.arange(len(held))
    sd = np.sqrt(np.maximum(var[rows, np.minimum(at, t - 1)], 0.0)) * cfg.density_width
    base = np.maximum(np.abs(held[rows, np.minimum(at, t - 1)]), 1.0) * 1e-6
    new_w = np.where(sd > 0, sd, base)
    w = np.where(fresh & has, new_w, state.density_w)
    on = ok & np.isfinite(w)[:, None] & (~(fresh & has)[:, None] | (cols > at[:, None]))
    b = np.clip(np.floor(held / np.where(np.isfinite(w), w, 1.0)[:, None]), -(2.0**50), 2.0**50)
    b = np.where(on & np.isfinite(b), b, 0.0).astype(np.int64)
    slots = np.mod(b[:, :, None] + np.array([-1, 0, 1]), H)
    counts = state.density_counts
    k = np.take_along_axis(counts, slots.reshape(len(b), -1), axis=1).reshape(slots.shape).sum(2)
    earlier = np.tril(np.ones((t, t), dtype=bool), -1)
    # Earlier points of the chunk are compared by slot as the counts are, so two bins that
    # share a slot count alike whichever chunk they fell in: scores do not depend on where
    # chunks end (the width follows the number of series scored together).
    slot = np.mod(b, H)
    apart = np.mod(slot[:, :, None] - slot[:, None, :], H)
    near = ((apart <= 1) | (apart == H - 1)) & earlier[None] & on[:, None, :]
    k = k + near.sum(axis=2)
    n = counts.sum(axis=1)[:, None] + np.cumsum(on, axis=1) - on
    surprisal = np.log((n + 1.0) / (k + 1.0))
    r = np.broadcast_to(rows[:, None], b.shape)
    np.add.at(counts, (r[on], np.mod(b[on], H)), 1)
    state.density_w = w
    return _surprise(surprisal, state.density_hist, on, cfg, is_z=False)


def _chunk(
    state: DetectorState, x: np.ndarray, phases: np.ndarray, weeks: np.ndarray
) -> np.ndarray:
    """Score a few consecutive time steps of every series (NaN = no sample)."""
    cfg = state.config
    a = cfg.level_alpha
    ok = np.isfinite(x)
    fresh = ~np.isfinite(state.level_mean)
    # Gaps hold the last value so the running statistics neither jump nor skip.
    held = _hold(x, np.where(fresh, np.nan, state.last_value))
    start = np.where(fresh, held[:, 0], state.level_mean)
    start = np.where(np.isfinite(start), start, 0.0)
    first = fresh[:, None] & (np.cumsum(ok, axis=1) == 1) & ok
    held = np.where(np.isfinite(held), held, start[:, None])
    prev_mean = _previous(_ewm(held, a, start), start)
    dev = held - prev_mean
    # Where nothing came the spread is held rather than shrunk by the
    # held level's zero deviations, so a gap does not make the next sample look extreme.
    var = _ewm_held(dev * dev, a, state.level_var, ok)
    prev_var = _previous(var, state.level_var)
    z_level = np.where(
        prev_var > 0, dev / np.sqrt(np.maximum(prev_var, 1e-300)), np.where(dev != 0, 1e6, 0.0)
    )
    state.level_mean = np.where(
        np.isfinite(state.level_mean) | ok.any(axis=1),
        prev_mean[:, -1] * (1 - a) + a * held[:, -1],
        state.level_mean,
    )
    state.level_var = var[:, -1]
    state.last_value = held[:, -1]
    lv = ok & ~first
    # Keyed by the histogram's slot so each feature keeps its own suppression history.
    feats = {0: _surprise(z_level, state.counts[:, 0], lv, cfg, top=state.z_top[:, 0])}
    if cfg.shift_alpha > 0:
        feats[2] = _shift(state, 0, np.where(lv, dev, 0.0), lv)
    novel = [_novelty(state, 0, np.where(lv, dev, 0.0), lv)] if cfg.novelty_k else []
    if cfg.density_slots:
        seen_at = state.seen[:, None] + np.cumsum(ok, axis=1)
        feats[N_FEATURES] = _density(state, held, var, seen_at, ok)
    if state.season:
        # Seasonal surprise: residual against the same phase of earlier days, profile as of
        # the chunk's start (a chunk never spans more than one period).
        col = state.profile[:, phases]
        known = state.profile_seen[:, phases] & ok
        resid = np.where(known, held - col, 0.0)
        if cfg.week_alpha > 0:
            resid = _week_residual(state, resid, known, weeks)
        prev_rmean = _previous(_ewm(resid, a, state.resid_mean), state.resid_mean)
        rdev = resid - prev_rmean
        rvar = _ewm_held(rdev * rdev, a, state.resid_var, known)
        prev_rvar = _previous(rvar, state.resid_var)
        z_season = np.where(prev_rvar > 0, rdev / np.sqrt(np.maximum(prev_rvar, 1e-300)), 0.0)
        feats[1] = _surprise(z_season, state.counts[:, 1], known, cfg, top=state.z_top[:, 1])
        if cfg.shift_alpha > 0:
            feats[3] = _shift(state, 1, rdev, known)
        if cfg.novelty_k:
            novel.append(_novelty(state, 1, rdev, known))
        state.resid_mean = prev_rmean[:, -1] * (1 - a) + a * resid[:, -1]
        state.resid_var = rvar[:, -1]
        sa = cfg.season_alpha
        for j, ph in enumerate(phases):
            seen = state.profile_seen[:, ph]
            state.profile[:, ph] = np.where(
                ok[:, j] & seen,
                (1 - sa) * state.profile[:, ph] + sa * held[:, j],
                np.where(ok[:, j], held[:, j], state.profile[:, ph]),
            )
            state.profile_seen[:, ph] |= ok[:, j]
    # Novelty is not damped: it already ranks against the whole history, not a recent window.
    score = _combine(_feature_suppress(state, feats) + novel, cfg.combine_power)
    seen = state.seen[:, None] + np.cumsum(ok, axis=1)
    state.seen = seen[:, -1]
    score = np.where(seen > cfg.warmup, score, 0.0)
    # A score that does not beat the previous ones belongs to an episode already reported.
    # Only observed points count as reported: the held value of a gap is scored to keep the
    # recurrences going, but an alert nobody saw must not damp the next real point.
    k = cfg.suppress
    trail = np.concatenate([state.recent, np.where(ok, score, 0.0)], axis=1)
    before = sliding_window_view(trail, k, axis=1)[:, :-1].max(axis=2)
    state.recent = trail[:, -k:]
    return np.where(ok, np.where(score > before, score, score * cfg.damp), 0.0)


def _hold(x: np.ndarray, last: np.ndarray) -> np.ndarray:
    """``x`` with each NaN replaced by the series' previous value (``last`` before the chunk)."""
    full = np.concatenate([last[:, None], x], axis=1)
    idx = np.where(np.isfinite(full), np.arange(full.shape[1])[None, :], 0)
    np.maximum.accumulate(idx, axis=1, out=idx)
    return np.take_along_axis(full, idx, axis=1)[:, 1:]


def score_matrix(state: DetectorState, timestamps: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Scores in [0, 1] for ``values[series, time]`` at ``timestamps``, advancing ``state``."""
    values = np.asarray(values, dtype=float)
    if values.ndim != 2 or values.shape[0] != state.n_series:
        raise InputError(f"values must be [{state.n_series} series, time]; got {values.shape}")
    secs = np.asarray(timestamps).astype("datetime64[s]").astype(np.int64)
    if len(secs) != values.shape[1]:
        raise InputError(f"{len(secs)} timestamps for {values.shape[1]} columns of values")
    if state.counts.shape[1] < N_FEATURES:  # a state saved before the shift features existed
        pad = np.zeros(
            (state.n_series, N_FEATURES - state.counts.shape[1], state.counts.shape[2]),
            dtype=state.counts.dtype,
        )
        state.counts = np.concatenate([state.counts, pad], axis=1)
    season = max(state.season, 1)
    phases = (secs // max(int(state.step_s), 1)) % season
    weeks = (secs // max(state.config.week_bin_s, 1)) % state.config.week_bins
    # Chunks bound the pairwise work (series × chunk²) and never span a seasonal period.
    width = max(
        1, min(CHUNK, state.season or CHUNK, math.isqrt(PAIRWISE_BUDGET // max(state.n_series, 1)))
    )
    out = np.empty_like(values)
    t0 = 0
    while t0 < values.shape[1]:
        t1 = min(values.shape[1], t0 + width)
        if state.season:
            t1 = t0 + _distinct_prefix(phases[t0:t1])
            if state.config.week_alpha > 0:
                t1 = t0 + _distinct_runs(weeks[t0:t1])
        out[:, t0:t1] = _chunk(state, values[:, t0:t1], phases[t0:t1], weeks[t0:t1])
        t0 = t1
    return out


def _distinct_prefix(phases: np.ndarray) -> int:
    """Length of the longest prefix with no phase twice (irregular or repeated timestamps).

    A chunk reads the daily profile as of its start, which equals reading it point by point
    only while no phase recurs inside the chunk; cutting chunks there keeps the scores
    independent of how a series is split into calls.
    """
    order = np.argsort(phases, kind="stable")
    srt = phases[order]
    repeats = order[1:][srt[1:] == srt[:-1]]
    return int(repeats.min()) if len(repeats) else len(phases)


def _week_residual(
    state: DetectorState, resid: np.ndarray, known: np.ndarray, weeks: np.ndarray
) -> np.ndarray:
    """The seasonal residual less what the same hour of the week left over in earlier weeks.

    Each week bin's profile is an EWMA (``week_alpha``, from zero) of the bin's mean residual,
    folded in when the series leaves the bin, so a point is judged only against earlier
    weeks (a bin recurs a week later; a chunk spans less than a day and never re-enters a
    bin). Updates the profile and the open bin's running sum.
    """
    wa = state.config.week_alpha
    corr = np.where(known, state.week_profile[:, weeks], 0.0)
    acc = state.week_acc
    rows = np.arange(state.n_series)
    cuts = np.flatnonzero(np.diff(weeks)) + 1
    for a, b in zip(np.r_[0, cuts], np.r_[cuts, len(weeks)], strict=True):
        leaving = (state.week_bin != weeks[a]) & (acc[:, 1] > 0) & (state.week_bin >= 0)
        if leaving.any():
            r, w = rows[leaving], state.week_bin[leaving]
            state.week_profile[r, w] += wa * (acc[r, 0] / acc[r, 1] - state.week_profile[r, w])
        acc[state.week_bin != weeks[a]] = 0.0
        state.week_bin[:] = weeks[a]
        acc[:, 0] += np.where(known[:, a:b], resid[:, a:b], 0.0).sum(axis=1)
        acc[:, 1] += known[:, a:b].sum(axis=1)
    return resid - corr


def _distinct_runs(bins: np.ndarray) -> int:
    """Length of the longest prefix in which no bin comes back after another one."""
    cuts = np.flatnonzero(np.diff(bins)) + 1
    starts = np.r_[0, cuts]
    order = np.argsort(bins[starts], kind="stable")
    srt = bins[starts][order]
    repeats = starts[order[1:][srt[1:] == srt[:-1]]]
    return int(repeats.min()) if len(repeats) else len(bins)


def score_series(
    timestamps: np.ndarray, values: np.ndarray, config: DetectorConfig | None = None
) -> np.ndarray:
    """Scores for one series from scratch (the NAB harness calls this per file)."""
    state = DetectorState.new(1, infer_step(timestamps), config)
    return score_matrix(state, timestamps, np.asarray(values, dtype=float)[None, :])[0]
