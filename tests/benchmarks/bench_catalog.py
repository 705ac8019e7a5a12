"""Benchmark: the metrics catalog into gold against a hand-written DuckDB rollup, same run.

A simulated estate (500 objects, one day at 1-minute resolution by default) is landed and
materialized through landing, bronze and silver once, untimed. Then, each in a fresh process
(so peak RSS is its own), over the same day(s) of silver:

- ``opslake``: ``compute_family`` for every family of the repository catalog
  (``Settings.metrics_dir``): CMDB join, scopes, versions, quality and usage, written to
  ``gold/metric_values`` and ``gold/metric_quality``;
- ``duckdb``: the rollup an engineer would write by hand over the same
  ``silver/metric_points`` Parquet files — ``avg(value)`` per metric, entity and hour, and per
  metric, entity and day — each ``COPY … TO parquet``.

Prints seconds, points per second and peak RSS for both, the ratio, and seconds and rows per
family. No assertions: figures go in the closing note. Run with ``make bench``
(``--entities``/``--days`` to scale).
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import date, timedelta
from pathlib import Path

START = date(2026, 3, 2)


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _settings(home: Path):
    from opslake.settings import Settings

    return Settings.from_env({"OPSLAKE_HOME": str(home)})


def prepare(home: Path, entities: int, days: int) -> dict:
    """Simulate the estate into ``home`` and materialize landing → bronze → silver."""
    from opslake.lake.landing import LandingZone
    from opslake.orchestration import runner
    from opslake.simulate import SimulationConfig, simulate

    settings = _settings(home)
    started = time.perf_counter()
    simulate(
        SimulationConfig(seed=7, entities=entities, days=days, start=START, step_seconds=60),
        LandingZone.from_settings(settings),
    )
    simulated = time.perf_counter() - started
    dts = [(START + timedelta(days=i)).isoformat() for i in range(days)]
    mark = time.perf_counter()
    runner.materialize(settings, dts, ["landing", "bronze", "silver"])
    return {"simulate_s": simulated, "materialize_s": time.perf_counter() - mark, "dts": dts}


def run_opslake(home: Path, dts: list[str]) -> dict:
    """Every family of the repository catalog for every day, as the gold assets run it."""
    from opslake.assets.metric_catalog import compute_family
    from opslake.lake.storage import Lake
    from opslake.metrics_catalog.catalog import Catalog

    settings = _settings(home)
    lake = Lake.from_settings(settings)
    points = sum(
        lake.read_table("silver", "metric_points", columns=["value"], dts=[d]).num_rows for d in dts
    )
    catalog = Catalog(settings.metrics_dir, lake)
    families = sorted(catalog.metrics.families)
    per_family = {
        f: {"seconds": 0.0, "rows": 0, "metrics": len(catalog.metrics.families[f]), "empty": 0}
        for f in families
    }
    started = time.perf_counter()
    for dt in dts:
        for family in families:
            mark = time.perf_counter()
            counts = compute_family(lake, catalog, family, dt, by="bench:catalog")
            per_family[family]["seconds"] += time.perf_counter() - mark
            per_family[family]["rows"] += sum(counts.values())
            per_family[family]["empty"] += sum(1 for n in counts.values() if n == 0)
    seconds = time.perf_counter() - started
    return {
        "seconds": seconds,
        "points": points,
        "families": per_family,
        "metrics": len(catalog.metrics.metrics),
        "rows": sum(f["rows"] for f in per_family.values()),
        "peak_rss_mb": _peak_rss_mb(),
    }


def run_duckdb(home: Path, dts: list[str], out: Path) -> dict:
    """The hand-written hourly and daily rollup over the same silver Parquet files."""
    import duckdb

    from opslake.lake.storage import Lake

    lake = Lake.from_settings(_settings(home))
    files = [
        f
        for f in lake.list_files(lake.table_path("silver", "metric_points"), recursive=True)
        if f.endswith(".parquet") and any(f"/dt={d}/" in f for d in dts)
    ]
    out.mkdir(parents=True, exist_ok=True)
    con = duckdb.connect()
    source = "read_parquet([" + ", ".join(f"'{f}'" for f in files) + "])"
    rows = {}
    started = time.perf_counter()
    for name, interval in (("hour", "1 hour"), ("day", "1 day")):
        target = out / f"{name}.parquet"
        con.execute(f"""
            COPY (SELECT metric, entity_id, time_bucket(INTERVAL '{interval}', ts) AS bucket,
                         avg(value) AS value
                  FROM {source}
                  GROUP BY ALL)
            TO '{target}' (FORMAT parquet, COMPRESSION zstd)""")
    seconds = time.perf_counter() - started
    for name in ("hour", "day"):
        rows[name] = int(con.execute(f"SELECT count(*) FROM '{out / name}.parquet'").fetchone()[0])
    points = int(con.execute(f"SELECT count(*) FROM {source}").fetchone()[0])
    return {
        "seconds": seconds,
        "points": points,
        "rows": rows,
        "files": len(files),
        "peak_rss_mb": _peak_rss_mb(),
    }


def _child(args: list[str]) -> dict:
    proc = subprocess.run(
        [sys.executable, __file__, *args], capture_output=True, text=True, check=False
    )
    if proc.returncode:
        raise SystemExit(f"{args[:2]} failed:\n{proc.stderr[-4000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--entities", type=int, default=500)
    parser.add_argument("--days", type=int, default=1)
    parser.add_argument("--role", choices=["prepare", "opslake", "duckdb"], help=argparse.SUPPRESS)
    parser.add_argument("--home", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--dts", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.role == "prepare":
        print(json.dumps(prepare(args.home, args.entities, args.days)))
        return
    if args.role == "opslake":
        print(json.dumps(run_opslake(args.home, args.dts.split(","))))
        return
    if args.role == "duckdb":
        print(json.dumps(run_duckdb(args.home, args.dts.split(","), args.out)))
        return

    work = Path(tempfile.mkdtemp(prefix="opslake-bench-catalog-"))
    try:
        home = work / "lake"
        prep = _child(
            [
                "--role",
                "prepare",
                "--home",
                str(home),
                "--entities",
                str(args.entities),
                "--days",
                str(args.days),
            ]
        )
        dts = ",".join(prep["dts"])
        duck = _child(
            ["--role", "duckdb", "--home", str(home), "--dts", dts, "--out", str(work / "duck")]
        )
        ours = _child(["--role", "opslake", "--home", str(home), "--dts", dts])
        print(
            f"estate: {args.entities} entities × {args.days} day(s) at 60 s: "
            f"{ours['points']:,} silver metric points (simulated in "
            f"{prep['simulate_s']:.1f} s, landing → bronze → silver in "
            f"{prep['materialize_s']:.1f} s, untimed)"
        )
        print(
            f"{'contender':<40}{'seconds':>9}{'points/s':>14}{'rows out':>12}{'peak RSS MiB':>14}"
        )
        for name, r, out_rows in (
            ("duckdb hourly + daily avg rollup", duck, sum(duck["rows"].values())),
            (f"opslake catalog ({ours['metrics']} metrics)", ours, ours["rows"]),
        ):
            print(
                f"{name:<40}{r['seconds']:>9.1f}{r['points'] / r['seconds']:>14,.0f}"
                f"{out_rows:>12,}{r['peak_rss_mb']:>14,.0f}"
            )
        print(f"  {'family':<28}{'metrics':>8}{'no rows':>9}{'seconds':>9}{'gold rows':>12}")
        for family, f in ours["families"].items():
            print(
                f"  {family:<28}{f['metrics']:>8}{f['empty']:>9}{f['seconds']:>9.1f}"
                f"{f['rows']:>12,}"
            )
        print(
            f"time ratio opslake catalog / duckdb rollup: "
            f"{ours['seconds'] / duck['seconds']:.2f}×; peak RSS opslake "
            f"{ours['peak_rss_mb'] / 1024:.2f} GiB vs duckdb {duck['peak_rss_mb'] / 1024:.2f} GiB"
        )
        print(
            f"duckdb rows: {duck['rows']['hour']:,} hourly + {duck['rows']['day']:,} daily "
            f"over {duck['points']:,} points; the catalog also joins the CMDB, scopes, "
            "versions, quality and usage, and reads the other silver tables its metrics need"
        )
        print(
            json.dumps(
                {
                    "entities": args.entities,
                    "days": args.days,
                    "prepare": prep,
                    "opslake": ours,
                    "duckdb": duck,
                    "ratio": ours["seconds"] / duck["seconds"],
                }
            )
        )
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
