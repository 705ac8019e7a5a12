"""Asset keys carry their layer: ``silver/metric_points``."""


import dagster as dg

OWNER = "team:data-platform"


def key(layer: str, name: str) -> dg.AssetKey:
    """The asset key of table ``name`` in ``layer``."""
    return dg.AssetKey([layer, name])
