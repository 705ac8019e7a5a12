"""How a failed step is retried: one policy for every asset job (S6.10e)."""

import dagster as dg

from opslake.settings import Settings

#: Two more tries, 10 s and then 30 s later (``OPSLAKE_STEP_RETRY_DELAY_S``, the first
#: wait): long enough for an S3 endpoint, a database or a killed worker to come back, short
#: enough that a day failing for good says so within a minute (then
#: opslake.alerting.platform raises the alert). No jitter: Dagster's spreads a delay over 0
#: to twice it, and a retry at once after an outage only fails again. A failure no retry
#: can fix raises ``dg.Failure(..., allow_retries=False)``. Collection jobs keep their own
#: breaker.
STEP_RETRY = dg.RetryPolicy(
    max_retries=2,
    delay=Settings.from_env().step_retry_delay_s,
    backoff=dg.Backoff.EXPONENTIAL,
)
