"""The demo estate simulator: a province's government IT estate, landed as raw source batches.

``simulate(SimulationConfig(seed=7, entities=500, days=3), landing)`` builds an estate of
all five kinds of managed object (S4), lets it run for ``days`` with business-day load,
injected faults that spread along the topology, alerts, tickets, CMDB changes, logs and
probes, and writes every source through the landing writer in its real format
(docs/sources.md). It returns the :class:`GroundTruth` and stores it as
``simulator/ground_truth.json`` in the lake. Same seed, same bytes.

Modules: ``estate`` (CIs and topology), ``cmdb`` (daily changes and snapshots), ``faults``,
``metrics`` (families and vectorised values), ``exposition`` (Prometheus text), ``alerts``
(rules and Alertmanager webhooks), ``tickets`` (ITSM CSV), ``syslog``, ``probes``,
``writer`` (landing batches) and ``simulator`` (the run).
"""

from opslake.simulate.config import SimulationConfig
from opslake.simulate.simulator import Progress, simulate
from opslake.simulate.truth import GroundTruth

__all__ = ["GroundTruth", "Progress", "SimulationConfig", "simulate"]
