"""The screens as data: datasets, charts and dashboards, turned into Superset's import YAML.

Each object gets a UUID derived from its key (uuid5), so regenerating the bundle gives the
same UUIDs and an import overwrites what it imported before instead of adding copies.
Charts carry both ``params`` (what the dashboard front end renders) and a ``query_context``
(what ``GET /api/v1/chart/{id}/data``, reports and cache warm-up run).
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field
from typing import Any

#: Namespace of every OpsLake screen object's UUID (never change it: UUIDs are identities).
NAMESPACE = uuid.UUID("5d3f7f0e-3c1b-4b8e-9a55-0b9a8c0e51a1")
DATABASE_KEY = "warehouse"
#: Filled in at import time (opslake.screens.bundle.render): this machine's values.
WAREHOUSE_TOKEN = "__OPSLAKE_WAREHOUSE__"
TIMEZONE_TOKEN = "__OPSLAKE_TIMEZONE__"
#: Grid of a dashboard row: 12 columns; one height unit is 8 px.
GRID_COLUMNS = 12


def object_uuid(kind: str, key: str) -> str:
    """The stable UUID of a screen object."""
    return str(uuid.uuid5(NAMESPACE, f"{kind}:{key}"))


@dataclass(frozen=True)
class Column:
    """A dataset column: name, DuckDB type, Chinese label, optional description."""

    name: str
    type: str
    label: str | None = None
    description: str | None = None

    @property
    def is_dttm(self) -> bool:
        """Temporal columns become Superset time axes."""
        return self.type in ("TIMESTAMP", "DATE")


@dataclass(frozen=True)
class Metric:
    """A saved dataset metric: SQL aggregate, Chinese label, description, number format."""

    name: str
    expression: str
    label: str
    description: str | None = None
    d3format: str | None = None


@dataclass(frozen=True)
class Dataset:
    """A virtual dataset over the serving warehouse (SQL with local-time columns)."""

    key: str
    #: Display name (Chinese first: what users pick in Explore).
    name: str
    description: str
    sql: str
    columns: tuple[Column, ...]
    metrics: tuple[Metric, ...] = ()
    main_dttm: str | None = None
    #: Rows carry a ``department`` column: the department roles' row-level security applies.
    by_department: bool = False

    @property
    def uuid(self) -> str:
        """Stable identity."""
        return object_uuid("dataset", self.key)

    def column(self, name: str) -> Column:
        """A column by name (KeyError names the dataset)."""
        for c in self.columns:
            if c.name == name:
                return c
        raise KeyError(f"dataset {self.key} has no column {name}")

    def metric(self, name: str) -> Metric:
        """A saved metric by name."""
        for m in self.metrics:
            if m.name == name:
                return m
        raise KeyError(f"dataset {self.key} has no metric {name}")

    def to_yaml(self) -> dict[str, Any]:
        """The dataset file of the bundle."""
        return {
            "table_name": self.name,
            "main_dttm_col": self.main_dttm,
            "description": self.description,
            "default_endpoint": None,
            "offset": 0,
            "cache_timeout": None,
            "schema": "main",
            "catalog": None,
            "sql": self.sql,
            "params": None,
            "template_params": None,
            "filter_select_enabled": True,
            "fetch_values_predicate": None,
            "extra": None,
            "normalize_columns": False,
            "always_filter_main_dttm": False,
            "uuid": self.uuid,
            "metrics": [
                {
                    "metric_name": m.name,
                    "verbose_name": m.label,
                    "metric_type": None,
                    "expression": m.expression,
                    "description": m.description,
                    "d3format": m.d3format,
                    "currency": None,
                    "extra": {},
                    "warning_text": None,
                }
                for m in self.metrics
            ],
            "columns": [
                {
                    "column_name": c.name,
                    "verbose_name": c.label,
                    "is_dttm": c.is_dttm,
                    "is_active": True,
                    "type": c.type,
                    "advanced_data_type": None,
                    "groupby": True,
                    "filterable": True,
                    "expression": None,
                    "description": c.description,
                    "python_date_format": None,
                    "extra": {},
                }
                for c in self.columns
            ],
            "version": "1.0.0",
            "database_uuid": object_uuid("database", DATABASE_KEY),
        }


@dataclass(frozen=True)
class Chart:
    """One chart: a viz type over a dataset, with what it shows and how it is filtered."""

    key: str
    title: str
    viz: str
    dataset: Dataset
    metrics: tuple[str, ...] = ()
    groupby: tuple[str, ...] = ()
    #: Time or category axis of the ECharts time-series family.
    x_axis: str | None = None
    time_grain: str | None = None
    #: SQL conditions ANDed into WHERE (e.g. the latest hour only).
    where: tuple[str, ...] = ()
    #: Raw-mode table columns (no aggregation).
    columns: tuple[str, ...] = ()
    order_by: tuple[tuple[str, bool], ...] = ()
    row_limit: int = 1000
    description: str | None = None
    #: Extra form-data keys (formatting, stacking, colours).
    options: dict[str, Any] = field(default_factory=dict)

    @property
    def uuid(self) -> str:
        """Stable identity."""
        return object_uuid("chart", self.key)

    @property
    def _temporal_axis(self) -> bool:
        return bool(self.x_axis) and self.dataset.column(self.x_axis).is_dttm

    @property
    def _time_format(self) -> str:
        # Dates and clock times as Chinese readers write them, not "Wed 25" / "06 PM".
        return "%m-%d %H:%M" if self.time_grain == "PT1H" else "%Y-%m-%d"

    @property
    def time_column(self) -> str | None:
        """The column a dashboard's time range filters: the time axis, else the dataset's."""
        return self.x_axis if self._temporal_axis else self.dataset.main_dttm

    def _adhoc_filters(self) -> list[dict[str, Any]]:
        filters: list[dict[str, Any]] = []
        if self.time_column:
            # "No filter" until a dashboard's time range (native filter, report) replaces it.
            filters.append(
                {
                    "clause": "WHERE",
                    "comparator": "No filter",
                    "expressionType": "SIMPLE",
                    "operator": "TEMPORAL_RANGE",
                    "subject": self.time_column,
                }
            )
        filters += [
            {
                "clause": "WHERE",
                "expressionType": "SQL",
                "sqlExpression": w,
                "filterOptionName": f"filter_{i}",
            }
            for i, w in enumerate(self.where)
        ]
        return filters

    def params(self) -> dict[str, Any]:
        """The chart's form data (what Explore and dashboards render)."""
        p: dict[str, Any] = {
            "viz_type": self.viz,
            "adhoc_filters": self._adhoc_filters(),
            "extra_form_data": {},
            "dashboards": [],
        }
        if self.viz in ("big_number_total",):
            p |= {
                "metric": self.metrics[0],
                "header_font_size": 0.4,
                "subheader_font_size": 0.15,
                "time_format": "smart_date",
            }
        elif self.viz == "pie":
            p |= {
                "metric": self.metrics[0],
                "groupby": list(self.groupby),
                "row_limit": self.row_limit,
                "sort_by_metric": True,
                "color_scheme": "supersetColors",
                "show_labels": True,
                "show_legend": True,
                "legendOrientation": "top",
                "legendType": "scroll",
                "label_type": "key_percent",
                "labels_outside": True,
                "outerRadius": 70,
                "innerRadius": 40,
                "donut": True,
                "number_format": "SMART_NUMBER",
            }
        elif self.viz in ("echarts_timeseries_line", "echarts_timeseries_bar"):
            p |= {
                "x_axis": self.x_axis,
                "metrics": list(self.metrics),
                "groupby": list(self.groupby),
                "row_limit": self.row_limit,
                "color_scheme": "supersetColors",
                "show_legend": True,
                "legendOrientation": "top",
                "legendType": "scroll",
                "rich_tooltip": True,
                "truncate_metric": True,
                "x_axis_time_format": self._time_format,
                "tooltipTimeFormat": self._time_format,
                "y_axis_format": "SMART_NUMBER",
                "order_desc": True,
                "series_limit": 0,
            }
            if self.time_grain:
                p["time_grain_sqla"] = self.time_grain
            if not self._temporal_axis:
                # A category axis shows the biggest first (and the top N with row_limit).
                p |= {"x_axis_sort": self.metrics[0], "x_axis_sort_asc": False}
            if self.viz == "echarts_timeseries_bar":
                p |= {"orientation": "vertical"}
            else:
                p |= {"markerEnabled": True, "markerSize": 4, "seriesType": "line"}
        elif self.viz == "table":
            if self.columns:
                # Four significant digits, not the sixteen a DOUBLE carries.
                numbers = {
                    c: {"d3NumberFormat": ".4~g"}
                    for c in self.columns
                    if self.dataset.column(c).type == "DOUBLE"
                }
                p |= {
                    "query_mode": "raw",
                    "all_columns": list(self.columns),
                    "order_by_cols": [json.dumps([c, asc]) for c, asc in self.order_by],
                    "column_config": numbers,
                }
            else:
                p |= {
                    "query_mode": "aggregate",
                    "groupby": list(self.groupby),
                    "metrics": list(self.metrics),
                    "percent_metrics": [],
                    "timeseries_limit_metric": (self.order_by[0][0] if self.order_by else None),
                    "order_desc": not (self.order_by and self.order_by[0][1]),
                }
            p |= {
                "row_limit": self.row_limit,
                "server_pagination": False,
                "include_search": False,
                "show_cell_bars": True,
                "table_timestamp_format": "%Y-%m-%d %H:%M",
                "allow_rearrange_columns": False,
            }
        else:
            raise ValueError(f"chart {self.key}: viz {self.viz!r} has no form-data builder")
        p |= self.options
        return p

    def query_context(self) -> dict[str, Any]:
        """The query the chart data API runs for this chart (datasource id set on import)."""
        columns: list[Any] = []
        if self.x_axis:
            axis: dict[str, Any] = {
                "columnType": "BASE_AXIS",
                "sqlExpression": self.x_axis,
                "label": self.x_axis,
                "expressionType": "SQL",
            }
            if self.time_grain:
                axis["timeGrain"] = self.time_grain
            columns.append(axis)
        columns += list(self.columns or self.groupby)
        # None (not []) asks for raw rows; an empty list would GROUP BY the columns.
        metrics = None if self.columns else list(self.metrics)
        if self.order_by:
            orderby = [[c, asc] for c, asc in self.order_by]
        elif metrics and not self._temporal_axis:
            orderby = [[metrics[0], False]]
        else:
            orderby = []
        filters = []
        if self.time_column:
            filters.append({"col": self.time_column, "op": "TEMPORAL_RANGE", "val": "No filter"})
        where = " AND ".join(f"({w})" for w in self.where)
        query = {
            "filters": filters,
            "extras": {"having": "", "where": where},
            "applied_time_extras": {},
            "columns": columns,
            "metrics": metrics,
            "orderby": orderby,
            "annotation_layers": [],
            "row_limit": self.row_limit,
            "series_limit": 0,
            "order_desc": True,
            "url_params": {},
            "custom_params": {},
            "custom_form_data": {},
            "time_range": "No filter",
        }
        return {
            "datasource": {"id": 0, "type": "table"},
            "force": False,
            "queries": [query],
            "form_data": self.params(),
            "result_format": "json",
            "result_type": "full",
        }

    def to_yaml(self) -> dict[str, Any]:
        """The chart file of the bundle."""
        return {
            "slice_name": self.title,
            "description": self.description,
            "certified_by": None,
            "certification_details": None,
            "viz_type": self.viz,
            "params": self.params(),
            "query_context": json.dumps(self.query_context(), ensure_ascii=False, sort_keys=True),
            "cache_timeout": None,
            "uuid": self.uuid,
            "version": "1.0.0",
            "dataset_uuid": self.dataset.uuid,
        }


@dataclass(frozen=True)
class Row:
    """One row of a dashboard: (chart, width in grid columns) pairs and a height (8 px units)."""

    cells: tuple[tuple[Chart, int], ...]
    height: int = 50


@dataclass(frozen=True)
class NativeFilter:
    """A dashboard filter: a time range (no column), or values of one dataset column.

    A value filter applies to ``charts`` only (a chart over another dataset, or over rows
    that never carry the column's value, would go blank); a time range applies to every
    chart with a :attr:`Chart.time_column`.
    """

    key: str
    name: str
    dataset: Dataset | None = None
    column: str | None = None
    charts: tuple[Chart, ...] = ()

    def to_yaml(self, chart_ids: dict[str, int]) -> dict[str, Any]:
        """Superset's ``native_filter_configuration`` entry (chart ids as in the position)."""
        common = {
            "id": f"NATIVE_FILTER-{self.key}",
            "name": self.name,
            "type": "NATIVE_FILTER",
            "description": "",
            "cascadeParentIds": [],
            "defaultDataMask": {"extraFormData": {}, "filterState": {}, "ownState": {}},
            "tabsInScope": [],
        }
        if self.column is None:
            return common | {
                "filterType": "filter_time",
                "targets": [{}],
                "controlValues": {"enableEmptyFilter": False},
                "scope": {"rootPath": ["ROOT_ID"], "excluded": []},
            }
        if self.dataset is None:
            raise ValueError(f"filter {self.key}: a value filter needs its dataset")
        self.dataset.column(self.column)  # KeyError names the dataset
        for chart in self.charts:
            chart.dataset.column(self.column)
        applies = {c.key for c in self.charts}
        # The importer maps these position ids to the imported charts' ids.
        excluded = sorted(i for key, i in chart_ids.items() if key not in applies)
        return common | {
            "filterType": "filter_select",
            "targets": [{"datasetUuid": self.dataset.uuid, "column": {"name": self.column}}],
            "controlValues": {
                "enableEmptyFilter": False,
                "defaultToFirstItem": False,
                "multiSelect": True,
                "searchAllOptions": False,
                "inverseSelection": False,
            },
            "scope": {"rootPath": ["ROOT_ID"], "excluded": excluded},
        }


@dataclass(frozen=True)
class Screen:
    """A dashboard laid out for a wall display (1920×1080: rows of 12 columns)."""

    slug: str
    title: str
    description: str
    rows: tuple[Row, ...]
    #: Seconds between automatic refreshes on the wall.
    refresh: int = 300
    #: Native filters shown in the dashboard's filter bar.
    filters: tuple[NativeFilter, ...] = ()

    @property
    def uuid(self) -> str:
        """Stable identity."""
        return object_uuid("dashboard", self.slug)

    @property
    def charts(self) -> list[Chart]:
        """Every chart on the screen, in layout order."""
        return [chart for row in self.rows for chart, _ in row.cells]

    def chart_ids(self) -> dict[str, int]:
        """Chart key → the placeholder id of its cell (import maps it to the real id)."""
        ids = {chart.key: i for i, chart in enumerate(self.charts, start=1)}
        if len(ids) != len(self.charts):
            raise ValueError(f"screen {self.slug}: two cells hold the same chart key")
        return ids

    def position(self) -> dict[str, Any]:
        """Superset's layout tree: header, grid, rows and chart cells (by chart UUID)."""
        pos: dict[str, Any] = {
            "DASHBOARD_VERSION_KEY": "v2",
            "ROOT_ID": {"type": "ROOT", "id": "ROOT_ID", "children": ["GRID_ID"]},
            "GRID_ID": {"type": "GRID", "id": "GRID_ID", "children": [], "parents": ["ROOT_ID"]},
            "HEADER_ID": {"type": "HEADER", "id": "HEADER_ID", "meta": {"text": self.title}},
        }
        ids = self.chart_ids()
        for r, row in enumerate(self.rows):
            if sum(width for _, width in row.cells) > GRID_COLUMNS:
                raise ValueError(f"screen {self.slug}: row {r} is wider than {GRID_COLUMNS}")
            row_id = f"ROW-{self.slug}-{r}"
            pos["GRID_ID"]["children"].append(row_id)
            pos[row_id] = {
                "type": "ROW",
                "id": row_id,
                "children": [],
                "parents": ["ROOT_ID", "GRID_ID"],
                "meta": {"background": "BACKGROUND_TRANSPARENT"},
            }
            for chart, width in row.cells:
                cell_id = f"CHART-{chart.key}"
                pos[row_id]["children"].append(cell_id)
                pos[cell_id] = {
                    "type": "CHART",
                    "id": cell_id,
                    "children": [],
                    "parents": ["ROOT_ID", "GRID_ID", row_id],
                    "meta": {
                        "width": width,
                        "height": row.height,
                        "chartId": ids[chart.key],
                        "uuid": chart.uuid,
                        "sliceName": chart.title,
                    },
                }
        return pos

    def to_yaml(self) -> dict[str, Any]:
        """The dashboard file of the bundle."""
        return {
            "dashboard_title": self.title,
            "description": self.description,
            "css": "",
            "slug": self.slug,
            "certified_by": "",
            "certification_details": "",
            "published": True,
            "uuid": self.uuid,
            "position": self.position(),
            "metadata": {
                "color_scheme": "supersetColors",
                "refresh_frequency": self.refresh,
                "timed_refresh_immune_slices": [],
                "expanded_slices": {},
                "label_colors": {},
                "shared_label_colors": [],
                "color_scheme_domain": [],
                "cross_filters_enabled": False,
                "native_filter_configuration": [f.to_yaml(self.chart_ids()) for f in self.filters],
                "chart_configuration": {},
                "default_filters": "{}",
            },
            "version": "1.0.0",
        }
