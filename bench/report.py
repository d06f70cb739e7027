"""The results as Markdown: the machine, each workload's table, and every target met or missed."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class Target:
    """One of issue #6's targets, and where its figure is in the results."""

    name: str
    limit: str
    figure: Callable[[dict[str, Any]], float | None]
    met: Callable[[float], bool]
    unit: str = ""


def _path(*keys: str | int) -> Callable[[dict[str, Any]], float | None]:
    def get(results: dict[str, Any]) -> float | None:
        value: Any = results
        for key in keys:
            try:
                value = value[key]
            except (KeyError, IndexError, TypeError):
                return None
        return None if value is None else float(value)

    return get


def _scale(count: int, key: str, section: str = "cold") -> Callable[[dict[str, Any]], float | None]:
    def get(results: dict[str, Any]) -> float | None:
        for row in results.get("scale", {}).get(section, []):
            if row["jobs"] == count and row.get(key) is not None:
                return float(row[key])
        return None

    return get


TARGETS = [
    Target(
        "JSON throughput, daemon (json codec) / plain json loop",
        ">= 0.95x",
        _path("throughput_json", "ratio_daemon_json_to_baseline"),
        lambda v: v >= 0.95,
        "x",
    ),
    Target(
        "JSON throughput, daemon with msgspec / daemon with json (issue #20)",
        ">= 3.0x",
        _path("throughput_json", "ratio_daemon_to_daemon_json"),
        lambda v: v >= 3.0,
        "x",
    ),
    Target(
        "JSON throughput, daemon with msgspec / plain msgspec loop (issue #20)",
        ">= 0.95x",
        _path("throughput_json", "ratio_daemon_to_baseline_msgspec"),
        lambda v: v >= 0.95,
        "x",
    ),
    Target(
        "JSON throughput, daemon / bytewax",
        ">= 1.0x",
        _path("throughput_json", "ratio_daemon_to_bytewax"),
        lambda v: v >= 1.0,
        "x",
    ),
    Target(
        "pass-through throughput, daemon / plain loop",
        ">= 0.8x",
        _path("throughput_lines", "ratio_daemon_to_baseline"),
        lambda v: v >= 0.8,
        "x",
    ),
    Target(
        "snapshot write / raw durable-write cycle",
        "<= 1.2x",
        _path("checkpoint", "ratio_daemon_to_raw"),
        lambda v: v <= 1.2,
        "x",
    ),
    Target(
        "memory per job, 10,000 jobs",
        "< 30 KB",
        _scale(10_000, "kb_per_job"),
        lambda v: v < 30,
        " KB",
    ),
    Target(
        "idle CPU, 10,000 jobs",
        "< 1% of a core",
        _scale(10_000, "idle_cpu_percent_of_core"),
        lambda v: v < 1,
        "%",
    ),
    Target(
        "`status` p99, 10,000 jobs",
        "< 200 ms",
        _scale(10_000, "status_p99_ms"),
        lambda v: v < 200,
        " ms",
    ),
    Target(
        "all RUNNING after start, 10,000 jobs",
        "< 5 s",
        _scale(10_000, "all_running_s"),
        lambda v: v < 5,
        " s",
    ),
    Target(
        "all RUNNING after restart, 10,000 snapshots",
        "< 5 s",
        _scale(10_000, "all_running_s", "restart"),
        lambda v: v < 5,
        " s",
    ),
    Target(
        "PostgreSQL sink, insert (COPY), daemon / plain psycopg loop",
        ">= 0.9x",
        _path("postgres", "ratio_insert"),
        lambda v: v >= 0.9,
        "x",
    ),
    Target(
        "PostgreSQL sink, upsert, daemon / plain psycopg loop",
        ">= 0.9x",
        _path("postgres", "ratio_upsert"),
        lambda v: v >= 0.9,
        "x",
    ),
    Target(
        "JSON throughput, metrics on / off",
        ">= 0.98x",
        _path("metrics", "throughput_json", "ratio_on_to_off"),
        lambda v: v >= 0.98,
        "x",
    ),
    Target(
        "`/metrics` scrape, 10,000 jobs (max)",
        "< 500 ms",
        lambda r: (
            r.get("metrics", {}).get("scrape", {}).get("scrape_ms_max")
            if r.get("metrics", {}).get("scrape", {}).get("jobs") == 10_000
            else None
        ),
        lambda v: v < 500,
        " ms",
    ),
    Target(
        "PostgreSQL table source, daemon / plain psycopg loop",
        ">= 0.9x",
        _path("postgres_sources", "ratio_table"),
        lambda v: v >= 0.9,
        "x",
    ),
    Target(
        "PostgreSQL CDC source, daemon / plain psycopg loop",
        ">= 0.9x",
        _path("postgres_sources", "ratio_cdc"),
        lambda v: v >= 0.9,
        "x",
    ),
    Target(
        "CPU-bound processor (~200 µs a record), workers = 2 / workers = 1",
        ">= 1.7x",
        _path("processors", "cpu", "workers = 2", "ratio_to_workers_1"),
        lambda v: v >= 1.7,
        "x",
    ),
    Target(
        "failure storm (1,000 jobs), event-loop lag p99",
        "< 50 ms",
        _path("storm", "loop_lag_p99_ms"),
        lambda v: v < 50,
        " ms",
    ),
]


def _f(value: Any, digits: int = 1) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        if value != value:  # NaN
            return "-"
        return f"{value:,.{digits}f}"
    return f"{value:,}" if isinstance(value, int) else str(value)


def targets_table(results: dict[str, Any]) -> list[str]:
    lines = ["| target | limit | measured | |", "|---|---|---|---|"]
    for target in TARGETS:
        value = target.figure(results)
        if value is None:
            lines.append(f"| {target.name} | {target.limit} | not measured | - |")
            continue
        verdict = "met" if target.met(value) else "**missed**"
        shown = f"{value:.2f}" if target.unit == "x" else _f(value, 2 if abs(value) < 10 else 1)
        lines.append(f"| {target.name} | {target.limit} | {shown}{target.unit} | {verdict} |")
    return lines


def _loads(values: list[float]) -> str:
    return ", ".join(f"{value:.2f}" for value in values)


def _throughput(title: str, section: dict[str, Any]) -> list[str]:
    lines = [
        f"### {title}",
        "",
        f"{section['daemon']['records']:,} records, checkpoint every "
        f"{section['every_records']:,}, median of {section['rounds']} alternating rounds; "
        "daemon / this is the median of each round's ratio "
        f"(1-min load average per round: {_loads(section['load_average_1m'])}).",
        "",
        "| | records/s | CPU s | peak RSS MB | daemon / this | each round |",
        "|---|---|---|---|---|---|",
    ]
    json_mode = section.get("mode") == "json"
    labels = {
        "daemon": f"daemon (codec {section.get('codec', 'json')})" if json_mode else "daemon",
        "daemon_json": "daemon (codec json)",
        "baseline": "plain loop (json)" if json_mode else "plain loop",
        "baseline_msgspec": "plain loop (msgspec)",
        "bytewax": "bytewax",
    }
    for name, label in labels.items():
        if name not in section:
            continue
        row = section[name]
        ratio = each = "-"
        if name != "daemon":
            ratio = f"{section[f'ratio_daemon_to_{name}']:.2f}x"
            paired = section.get(f"ratio_daemon_to_{name}_per_round", [])
            each = _each_round(paired) or "-"
        lines.append(
            f"| {label} | {row['records_per_s']:,.0f} | {row['cpu_s']:.2f} | "
            f"{row['peak_rss_mb']:.0f} | {ratio} | {each} |"
        )
    if "bytewax" not in section:
        lines.append(f"| bytewax | {section.get('bytewax_note', 'not installed')} | | | | |")
    if "msgspec_note" in section and json_mode:
        lines.append(f"| msgspec | {section['msgspec_note']} | | | | |")
    if "ratio_daemon_json_to_baseline" in section:
        lines += [
            "",
            "daemon (codec json) / plain loop (json): "
            f"{section['ratio_daemon_json_to_baseline']:.2f}x "
            f"(each round: {_each_round(section['ratio_daemon_json_to_baseline_per_round'])}).",
        ]
    return [*lines, ""]


def markdown(results: dict[str, Any]) -> str:
    machine = results["machine"]
    out = [
        "# Benchmark results",
        "",
        f"`{results['command']}`, {results['started_at']} ({results['duration_s']:.0f} s). "
        f"Machine: {machine['cpus']} CPUs ({machine['cpu_model']}), "
        f"{machine['memory_gib']} GiB, Python {machine['python']}, Linux {machine['kernel']}; "
        f"load average at start {', '.join(f'{x:.2f}' for x in machine['load_average_at_start'])}.",
        "",
        "## Targets",
        "",
        *(
            ["`--quick`: small sizes, a smoke check; the targets are for the full run.", ""]
            if "--quick" in results["command"]
            else []
        ),
        *targets_table(results),
        "",
    ]
    if "throughput_json" in results:
        out += _throughput("Throughput: JSON processor", results["throughput_json"])
    if "throughput_lines" in results:
        out += _throughput(
            "Throughput: pass-through (lines in, lines out)", results["throughput_lines"]
        )
    if "checkpoint" in results:
        c = results["checkpoint"]
        out += [
            "### Checkpoint cost",
            "",
            f"{c['writes']} snapshot writes ({c['bytes']} bytes), each followed by a raw "
            "write+fsync+rename+fsync(dir) of the same size, and by that raw cycle with the "
            "previous file kept first (link + rename) in a worker thread: the same durable "
            "work without the snapshot's encoding and checks.",
            "",
            "| | p50 ms | p99 ms | daemon / this (p50) |",
            "|---|---|---|---|",
            f"| daemon snapshot write (`JobLedger.write`) | {c['daemon_ms_p50']:.2f} | "
            f"{c['daemon_ms_p99']:.2f} | - |",
            f"| raw durable-write cycle | {c['raw_ms_p50']:.2f} | {c['raw_ms_p99']:.2f} | "
            f"{c['ratio_daemon_to_raw']:.2f}x |",
        ]
        if "same_work_ms_p50" in c:
            out.append(
                f"| raw cycle + previous kept, in a worker thread | {c['same_work_ms_p50']:.2f} | "
                f"{c['same_work_ms_p99']:.2f} | {c['ratio_daemon_to_same_work']:.2f}x |"
            )
        out.append("")
    if "sweep" in results:
        s = results["sweep"]
        out += [
            "### `checkpoint.every_records` sweep (JSON workload, daemon)",
            "",
            f"{s['records']:,} records, median of {s['rounds']} rounds.",
            "",
            "| every_records | records/s |",
            "|---|---|",
            *(f"| {int(k):,} | {v:,.0f} |" for k, v in s["records_per_s"].items()),
            "",
        ]
    if "scale" in results:
        out += _scale_tables(results["scale"])
    if "storm" in results:
        out += _storm(results["storm"])
    if "postgres" in results:
        from bench.postgres_bench import markdown as postgres_markdown

        section = results["postgres"]
        out += (
            [f"### PostgreSQL sink: {section['error']}", ""]
            if "error" in section
            else (postgres_markdown(section))
        )
    if "redis" in results:
        out += _redis(results["redis"])
    if "metrics" in results:
        out += _metrics(results["metrics"])
    if "amqp" in results:
        from bench.amqp_bench import report_lines

        out += report_lines(results["amqp"])
    if "postgres_sources" in results:
        from bench.postgres_source_bench import markdown as sources_markdown

        section = results["postgres_sources"]
        out += (
            [f"### PostgreSQL sources: {section['error']}", ""]
            if "error" in section
            else sources_markdown(section)
        )
    if "nats" in results:
        out += _nats(results["nats"])
    return "\n".join(out) + "\n"


def _metrics(section: dict[str, Any]) -> list[str]:
    if "error" in section:
        return ["### Metrics (HTTP listener)", "", f"Not measured: {section['error']}", ""]
    on_off, scrape = section["throughput_json"], section["scrape"]
    return [
        "### Metrics (HTTP listener)",
        "",
        f"JSON throughput without and with `http_listen` and a scrape every "
        f"{on_off['scrape_every_s']:g} s, {on_off['rounds']} alternating rounds: "
        f"{_f(on_off['off_records_per_s'], 0)} vs {_f(on_off['on_records_per_s'], 0)} "
        f"records/s, on / off {on_off['ratio_on_to_off']:.3f}x "
        f"(each round: {_each_round(on_off['ratio_per_round'])}); the daemon's CPU seconds "
        f"{_f(on_off.get('off_cpu_s'), 2)} vs {_f(on_off.get('on_cpu_s'), 2)}, on / off "
        f"{_f(on_off.get('cpu_ratio_on_to_off'), 3)}x.",
        "",
        f"{scrape['jobs']:,} idle jobs: a scrape (OpenMetrics, {_f(scrape.get('scrape_bytes'))} "
        f"bytes) takes {_f(scrape.get('scrape_ms_median'))} ms median, "
        f"{_f(scrape.get('scrape_ms_max'))} ms max; idle CPU over {scrape['idle_seconds']:g} s "
        f"with a scrape every 15 s {_f(scrape.get('idle_cpu_percent_with_scrapes'), 2)}% of a "
        f"core, without the listener {_f(scrape.get('idle_cpu_percent_off'), 2)}%.",
        "",
    ]


def _nats(nats: dict[str, Any]) -> list[str]:
    if "error" in nats:
        return ["### NATS JetStream", "", f"Not measured: {nats['error']}", ""]
    lines = [
        "### NATS JetStream (`bench/nats_bench.py`)",
        "",
        f"{nats['records']:,} records, checkpoint every {nats['every_records']:,}, median of "
        f"{nats['rounds']} alternating rounds; daemon / loop is the median of each round's "
        "ratio. Loops: plain nats-py, one pull request per batch, the same acks and durable "
        "offset writes at the same cadence (source); async publishes with the same message "
        "ids, PubAcks awaited per checkpoint (sink).",
        "",
        "| workload | daemon records/s | plain loop records/s | daemon / loop |",
        "|---|---|---|---|",
    ]
    names = {
        "replay": "source, replay -> null",
        "shared": "source, shared (durable) -> null",
        "sink": "generate -> sink",
    }
    for mode, title in names.items():
        row = nats[mode]
        lines.append(
            f"| {title} | {row['daemon_records_per_s']:,.0f} | "
            f"{row['baseline_records_per_s']:,.0f} | {row['ratio_daemon_to_baseline']:.2f}x |"
        )
    return [*lines, ""]


def _scale_tables(scale: dict[str, Any]) -> list[str]:
    base = scale["no_jobs"]
    lines = [
        "### Scale: jobs in one daemon (cold start)",
        "",
        f"Idle `generate` jobs (rate {scale['idle_rate']}/s), `null` sink, checkpoint every "
        f"second; CPU and event-loop lag over {scale['idle_seconds']} s once all run; "
        f"each figure the median of {scale.get('rounds', 1)} round(s). "
        f"A daemon with no jobs: {base['rss_mb']:.1f} MB RSS, "
        f"{base['idle_cpu_percent_of_core']:.2f}% of a core.",
        "",
        "| jobs | all RUNNING s | each round s | RSS MB | KB / job | idle CPU % of a core "
        "| loop lag p50 / p99 ms | `status` p50 / p99 ms |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in scale["cold"]:
        lines.append(
            f"| {row['jobs']:,} | {row['all_running_s']:.2f} | {_rounds(row)} | "
            f"{row['rss_mb']:.1f} | "
            f"{row['kb_per_job']:.1f} | {row['idle_cpu_percent_of_core']:.2f} | "
            f"{_f(row['loop_lag_p50_ms'], 2)} / {_f(row['loop_lag_p99_ms'], 2)} | "
            f"{row['status_p50_ms']:.1f} / {row['status_p99_ms']:.1f} |"
        )
    lines += [
        "",
        "### Restart recovery",
        "",
        "The same jobs, each with a snapshot on disk, started again.",
        "",
        "| snapshots | all RUNNING s | each round s | RSS MB |",
        "|---|---|---|---|",
    ]
    for row in scale["restart"]:
        lines.append(
            f"| {row['snapshots']:,} | {row['all_running_s']:.2f} | {_rounds(row)} | "
            f"{row['rss_mb']:.1f} |"
        )
    return [*lines, ""]


def _rounds(row: dict[str, Any]) -> str:
    return _each_round(row.get("all_running_s_per_round", []))


def _each_round(values: list[float]) -> str:
    return " / ".join(f"{value:.2f}" for value in values)


def _storm(storm: dict[str, Any]) -> list[str]:
    if "error" in storm:
        return ["### Failure storm", "", f"Not measured: {storm['error']}", ""]
    rounds = int(storm.get("rounds", 1))
    per_round = ", ".join(_f(lag) for lag in storm.get("loop_lag_p99_ms_per_round", []))
    return [
        "### Failure storm",
        "",
        f"{int(storm['jobs']):,} jobs failing at once (`bench/storm.py`), {rounds} storm(s); "
        f"percentiles over the samples of all of them pooled "
        f"({storm.get('loop_lag_samples', '?')} loop-lag probes), times the median of the "
        f"storms. Loop-lag p99 of each storm alone: {per_round or '-'} ms.",
        "",
        "| status p50 / p99 ms (storm) | loop lag p50 / p99 / max ms | all failed in s "
        "| recovery s |",
        "|---|---|---|---|",
        f"| {_f(storm.get('status_p50_ms'))} / {_f(storm.get('status_p99_ms'))} | "
        f"{_f(storm.get('loop_lag_p50_ms'))} / {_f(storm.get('loop_lag_p99_ms'))} / "
        f"{_f(storm.get('loop_lag_max_ms'))} | {_f(storm.get('storm_s'), 2)} | "
        f"{_f(storm.get('recovery_s'), 2)} |",
        "",
    ]


def _redis(section: dict[str, Any]) -> list[str]:
    if "error" in section:
        return ["### Redis Streams connector", "", f"Not measured: {section['error']}", ""]
    from bench.redis_bench import markdown as redis_markdown

    return redis_markdown(section)
