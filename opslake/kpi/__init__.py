"""Gold-layer KPIs as plain functions over silver tables: rollups, health, service levels."""
