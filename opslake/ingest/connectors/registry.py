"""Installed connectors, found through the ``opslake.connectors`` entry-point group.

Third-party packages add connectors by declaring entry points in that group; each entry
point names a ``Connector`` subclass.
"""

from __future__ import annotations

from importlib.metadata import entry_points

from opslake.errors import ConfigError
from opslake.ingest.connectors.base import Connector

GROUP = "opslake.connectors"


def available() -> dict[str, type[Connector]]:
    """Entry-point name → connector class, for every installed connector."""
    found: dict[str, type[Connector]] = {}
    for ep in entry_points(group=GROUP):
        try:
            cls = ep.load()
        except Exception as exc:  # a broken plug-in must say which one it is
            raise ConfigError(
                f"connector entry point {ep.name!r} ({ep.value}) does not load: "
                f"{type(exc).__name__}: {exc}; fix or uninstall its package"
            ) from exc
        if not (isinstance(cls, type) and issubclass(cls, Connector)):
            raise ConfigError(
                f"connector entry point {ep.name!r} ({ep.value}) is not a Connector subclass"
            )
        found[ep.name] = cls
    return found
