"""Dagster resources: the lake, as configured by the environment (``OPSLAKE_*``)."""

from __future__ import annotations

import functools

import dagster as dg

from opslake.lake.landing import LandingZone
from opslake.lake.storage import Lake
from opslake.settings import Settings
from opslake.transforms.metrics import sweep_spills


class LakeResource(dg.ConfigurableResource):
    """The OpsLake lake; fields override ``OPSLAKE_HOME`` / ``OPSLAKE_STATE_DIR`` when set."""

    home: str | None = None
    state_dir: str | None = None

    def setup_for_execution(self, context: dg.InitResourceContext) -> None:
        """At the start of each run, remove bytes staged by writes that were killed.

        A lake that cannot be reached now is left to the steps: a step's failure is retried
        (opslake.assets.retries), a resource's would fail the run at once.
        """
        try:
            swept = self.lake().sweep_staged() + sweep_spills(self.settings().state_dir)
        except OSError as exc:
            context.log.warning(f"could not sweep staged objects now ({exc}); the next run will")
            return
        if swept:
            context.log.info(
                f"removed {swept} staged object(s) or spill(s) left by interrupted writes"
            )

    def settings(self) -> Settings:
        """Settings from the environment, with this resource's overrides."""
        overrides = {}
        if self.home:
            overrides["OPSLAKE_HOME"] = self.home
        if self.state_dir:
            overrides["OPSLAKE_STATE_DIR"] = self.state_dir
        return Settings.from_env(overrides=overrides)

    def lake(self) -> Lake:
        """The lake (cached per settings)."""
        return _open_lake(self.settings())

    def landing(self) -> LandingZone:
        """The landing zone of the lake: the settings' window, sealed sources and data keys."""
        return LandingZone.from_settings(self.settings(), self.lake())


@functools.lru_cache(maxsize=8)
def _open_lake(settings: Settings) -> Lake:
    return Lake.from_settings(settings)
