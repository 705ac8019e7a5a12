"""Pull connectors: collect from real sources and land what they deliver (docs/sources.md).

Each connector is a plain object with ``collect(landing, now)``; a scheduler (Dagster
sensor, cron, a loop) decides when to call it. Installed connectors are listed by
``opslake.ingest.connectors.registry.available()`` (entry-point group ``opslake.connectors``).
"""
