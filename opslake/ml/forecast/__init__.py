"""Forecasts with intervals: a vectorised statistical baseline, Prophet, and seasonal naive.

Series live on a regular grid as a 2-D array ``[series, time]`` with NaN for gaps. Seasonal
naive (the value one day earlier) is the benchmark every method must beat; MASE is scaled by
its in-sample error with the daily season. What lives where:

- :mod:`.common`: :class:`~.common.Forecast`, the sampling grid (``infer_step``,
  ``season_length``), ``LEVELS`` and the array checks every forecaster shares.
- :mod:`.naive`: seasonal naive and persistence (the benchmarks and the short-history fallbacks).
- :mod:`.baseline`: the statistical baseline, robust damped Holt-Winters over a parameter grid
  for every series at once, with empirical intervals.
- :mod:`.prophet`: Prophet, per series, for the metrics flagged for capacity planning.
- :mod:`.metrics`: MASE, sMAPE, interval coverage and width.
- :mod:`.capacity`: when a series fills up (a robust linear trend).
- :mod:`.catalog`: the raw metrics behind the catalog's ``capacity_planning`` tag.
- :mod:`.daily`: what the daily ``gold/forecasts`` and ``gold/capacity`` assets write.
"""
