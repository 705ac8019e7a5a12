"""Benchmark: landing → bronze → silver against DuckDB's own raw → Parquet, same data, same run.

One simulated day of a 2,000-object estate at 1-minute resolution is landed once as raw
files. Then, each in a fresh process (so peak RSS is its own):

- ``opslake``: lands every raw file through the durable landing writer (fsync, manifest),
  then materializes landing, bronze and silver through Dagster;
- ``duckdb``: ``read_csv`` / ``read_json`` of the same raw files → ``COPY … TO parquet``,
  with the metric name, entity, value and time extracted in SQL.

Prints seconds, points per second, peak RSS and CPU seconds (all threads, so "cores used" is
how much of the machine each kept busy) for both and the ratios, with the load
average (compare only within one run). ``--scales 1,4`` repeats it at 4× the entities and
prints peak RSS against the first run's. No assertions: figures go in the closing note.
Run with ``make bench`` (``--entities``/``--days`` to scale).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

FORMATS = {
    "prometheus": "prom",
    "alertmanager": "json",
    "syslog": "log",
    "itsm": "csv",
    "cmdb": "json",
    "probes": "json",
}


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _cpu_s() -> float:
    """CPU seconds (user + system, every thread) of this process and the children it reaped."""
    return sum(
        usage.ru_utime + usage.ru_stime
        for usage in map(resource.getrusage, (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN))
    )


def simulate_raw(raw_home: Path, entities: int, days: int) -> dict:
    """Land the simulated estate once; its landing files are the benchmark's raw input."""
    from opslake.lake.landing import LandingZone
    from opslake.lake.storage import Lake
    from opslake.settings import Settings
    from opslake.simulate import SimulationConfig, simulate

    # In clear: both contenders read these files as they lie (DuckDB cannot open a sealed
    # CMDB or ITSM object); opslake's own lake seals them again as it lands them.
    settings = Settings.from_env(
        {"OPSLAKE_HOME": str(raw_home), "OPSLAKE_LANDING_ENCRYPTED_SOURCES": "none"}
    )
    lake = Lake.from_settings(settings)
    started = time.perf_counter()
    truth = simulate(
        SimulationConfig(
            seed=7, entities=entities, days=days, start=date(2026, 3, 2), step_seconds=60
        ),
        LandingZone.from_settings(settings, lake),
    )
    return {"seconds": time.perf_counter() - started, "points": truth.count("metric_points")}


def run_opslake(raw_home: Path, home: Path) -> dict:
    """Land every raw batch durably into a fresh lake, then landing → bronze → silver."""
    from opslake.lake.landing import LandingZone
    from opslake.lake.storage import Lake
    from opslake.orchestration import runner
    from opslake.settings import Settings

    raw = LandingZone.from_settings(
        Settings.from_env(
            {"OPSLAKE_HOME": str(raw_home), "OPSLAKE_LANDING_ENCRYPTED_SOURCES": "none"}
        )
    )
    settings = Settings.from_env({"OPSLAKE_HOME": str(home)})
    zone = LandingZone.from_settings(settings)
    phases: dict[str, float] = {}
    started, cpu = time.perf_counter(), _cpu_s()
    days: set[str] = set()
    for source in raw.sources():
        for dt in raw.days(source):
            days.add(dt)
            for batch in raw.batches(source, dt):
                with open(batch.path, "rb") as f:
                    zone.write(
                        source,
                        iter(lambda f=f: f.read(8 * 2**20), b""),
                        fmt=batch.fmt,
                        batch_id=batch.batch_id,
                        received_at=batch.received,
                        dt=dt,
                    )
    phases["landing write"] = time.perf_counter() - started
    mark = time.perf_counter()
    runner.materialize(settings, sorted(days), ["landing", "bronze", "silver"])
    phases["landing → bronze → silver (Dagster)"] = time.perf_counter() - mark
    lake = Lake.from_settings(settings)
    points = sum(
        lake.read_table("silver", "metric_points", columns=["value"], dts=[d]).num_rows
        for d in days
    )
    return {
        "seconds": time.perf_counter() - started,
        "phases": phases,
        "points": points,
        "peak_rss_mb": _peak_rss_mb(),
        "cpu_s": _cpu_s() - cpu,
        "slowest_steps": _slowest_steps(runner.instance(settings)),
    }


def _slowest_steps(instance, count: int = 6) -> list[tuple[str, float]]:
    """(step, seconds) of the slowest steps of the runs just made, slowest first."""
    steps = [
        (f"{run.job_name}: {stat.step_key}", stat.end_time - stat.start_time)
        for run in instance.get_runs()
        for stat in instance.get_run_step_stats(run.run_id)
        if stat.end_time and stat.start_time
    ]
    return sorted(steps, key=lambda s: -s[1])[:count]


def run_duckdb(raw_home: Path, out: Path) -> dict:
    """DuckDB's own readers over the same raw files, each source COPYed to Parquet."""
    import duckdb

    out.mkdir(parents=True, exist_ok=True)
    land = raw_home / "landing"
    con = duckdb.connect()
    started, cpu = time.perf_counter(), _cpu_s()
    statements = {
        "prometheus": f"""
            SELECT regexp_extract(series, '^[a-zA-Z_:][a-zA-Z0-9_:]*') AS metric,
                   regexp_extract(series, 'entity_id="([^"]*)"', 1) AS entity_id,
                   regexp_extract(series, '\\{{.*\\}}') AS labels,
                   TRY_CAST(value AS DOUBLE) AS value,
                   make_timestamp(TRY_CAST(ts AS BIGINT) * 1000) AS ts
            FROM read_csv('{land}/source=prometheus/*/*.prom', delim=' ', header=false,
                          comment='#', quote='', escape='', null_padding=true,
                          ignore_errors=true,
                          columns={{'series': 'VARCHAR', 'value': 'VARCHAR', 'ts': 'VARCHAR'}})
            ORDER BY metric, entity_id, ts""",
        "alertmanager": f"""
            SELECT unnest(alerts, recursive := true)
            FROM read_json('{land}/source=alertmanager/*/*.json', format='newline_delimited',
                           ignore_errors=true)""",
        "syslog": f"""
            SELECT regexp_extract(line, '^<(\\d+)>', 1) AS pri,
                   regexp_extract(line, '^<\\d+>1 (\\S+) (\\S+) (\\S+)', ['ts', 'host', 'app'])
                       AS head,
                   line AS raw
            FROM read_csv('{land}/source=syslog/*/*.log', delim='\\x01', header=false,
                          quote='', escape='', columns={{'line': 'VARCHAR'}})""",
        "itsm": f"""SELECT * FROM read_csv('{land}/source=itsm/*/*.csv', header=true,
                                        ignore_errors=true)""",
        "cmdb": f"""
            SELECT unnest(cis, recursive := true)
            FROM read_json('{land}/source=cmdb/*/*.json', maximum_object_size=1073741824)""",
        "probes": f"""SELECT * FROM read_json('{land}/source=probes/*/*.json',
                                           format='newline_delimited', ignore_errors=true)""",
    }
    for name, sql in statements.items():
        con.execute(f"COPY ({sql}) TO '{out / name}.parquet' (FORMAT parquet, COMPRESSION zstd)")
    seconds, cpu = time.perf_counter() - started, _cpu_s() - cpu
    points = con.execute(f"SELECT count(*) FROM '{out}/prometheus.parquet'").fetchone()[0]
    return {"seconds": seconds, "points": int(points), "peak_rss_mb": _peak_rss_mb(), "cpu_s": cpu}


def _child(args: list[str]) -> dict:
    proc = subprocess.run(
        [sys.executable, __file__, *args], capture_output=True, text=True, check=False
    )
    if proc.returncode:
        raise SystemExit(f"{args[0]} failed:\n{proc.stderr[-4000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--entities", type=int, default=2000)
    parser.add_argument("--days", type=int, default=1)
    parser.add_argument(
        "--scales",
        type=lambda v: [int(k) for k in v.split(",")],
        default=[1],
        help="comma-separated multiples of --entities to run in turn, e.g. "
        "1,4: prints each and the peak RSS ratio to the first",
    )
    parser.add_argument("--role", choices=["opslake", "duckdb"], help=argparse.SUPPRESS)
    parser.add_argument("--raw", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.role == "opslake":
        print(json.dumps(run_opslake(args.raw, args.out)))
        return
    if args.role == "duckdb":
        print(json.dumps(run_duckdb(args.raw, args.out)))
        return

    runs = [run_scale(args.entities * k, args.days) for k in args.scales]
    if len(runs) > 1:
        first = runs[0]
        print(
            f"{'scale':<8}{'entities':>9}{'points':>13}{'opslake s':>11}{'/ duckdb':>10}"
            f"{'peak RSS GiB':>14}{'RSS / 1st':>11}"
        )
        for k, r in zip(args.scales, runs, strict=True):
            print(
                f"{k:<8}{r['entities']:>9,}{r['points']:>13,}{r['seconds']:>11.1f}"
                f"{r['ratio']:>9.2f}×{r['rss_gib']:>14.2f}"
                f"{r['rss_gib'] / first['rss_gib']:>10.2f}×"
            )
        print("targets: each ≤ 1.5× duckdb and < 4 GiB; peak RSS ≤ 1.5× the first run's")


def run_scale(entities: int, days: int) -> dict:
    """Simulate, then time both contenders on the same raw files; prints and returns figures."""
    work = Path(tempfile.mkdtemp(prefix="opslake-bench-"))
    try:
        raw = work / "raw"
        sim = simulate_raw(raw, entities, days)
        raw_bytes = sum(
            f.stat().st_size
            for f in (raw / "landing").rglob("*")
            if f.is_file() and "_manifest" not in f.parts
        )
        print(
            f"raw data: {entities} entities × {days} day(s) at 60 s: "
            f"{sim['points']:,} metric points, {raw_bytes / 2**20:,.0f} MiB "
            f"(simulated in {sim['seconds']:.1f} s)"
        )
        duck = _child(["--role", "duckdb", "--raw", str(raw), "--out", str(work / "duck")])
        ours = _child(["--role", "opslake", "--raw", str(raw), "--out", str(work / "lake")])
        print(
            f"{'contender':<34}{'seconds':>9}{'points/s':>14}{'peak RSS MiB':>14}"
            f"{'CPU s':>8}{'cores used':>12}"
        )
        for name, r in (
            ("duckdb read_* → COPY parquet", duck),
            ("opslake landing → bronze → silver", ours),
        ):
            print(
                f"{name:<34}{r['seconds']:>9.1f}{r['points'] / r['seconds']:>14,.0f}"
                f"{r['peak_rss_mb']:>14,.0f}{r['cpu_s']:>8.1f}{r['cpu_s'] / r['seconds']:>12.2f}"
            )
        for phase, seconds in ours["phases"].items():
            print(f"  opslake {phase}: {seconds:.1f} s")
        print(
            "  slowest steps: "
            + ", ".join(f"{step} {seconds:.1f} s" for step, seconds in ours["slowest_steps"])
        )
        ratio = ours["seconds"] / duck["seconds"]
        print(
            f"time ratio opslake / duckdb: {ratio:.2f}× (target ≤ 1.5×); CPU ratio "
            f"{ours['cpu_s'] / duck['cpu_s']:.2f}×; peak RSS "
            f"{ours['peak_rss_mb'] / 1024:.2f} GiB (target < 4 GiB); load average "
            f"{' '.join(f'{x:.2f}' for x in os.getloadavg())} (2 cores: compare within a run)"
        )
        print(
            f"silver points {ours['points']:,} vs duckdb rows {duck['points']:,} "
            "(duckdb keeps malformed lines it cannot detect; silver quarantines them)"
        )
        return {
            "entities": entities,
            "points": ours["points"],
            "seconds": ours["seconds"],
            "ratio": ratio,
            "rss_gib": ours["peak_rss_mb"] / 1024,
        }
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
