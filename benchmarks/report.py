"""The benchmark results as Markdown: one table per benchmark, ratios to the floor, the targets."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from benchmarks import llm_litellm, loadtest_ceiling, memory


def _rows(section: Mapping[str, object]) -> list[Mapping[str, object]]:
    rows = section.get("rows", [])
    assert isinstance(rows, Sequence)
    return [row for row in rows if isinstance(row, Mapping)]


def _num(value: object, spec: str) -> str:
    return format(value, spec) if isinstance(value, int | float) else "-"


def machine_line(machine: Mapping[str, object]) -> str:
    versions = machine.get("versions", {})
    assert isinstance(versions, Mapping)
    listed = ", ".join(f"{name} {version}" for name, version in versions.items())
    return (
        f"{machine.get('cpu_model')}, {machine.get('cores')} cores, {machine.get('kernel')}; "
        f"Python {machine.get('python')}; {listed}; load average before/after "
        f"{machine.get('loadavg_before')} / {machine.get('loadavg_after')}"
    )


def hit_path(section: Mapping[str, object]) -> list[str]:
    if "skipped" in section:
        return [f"Skipped: {section['skipped']}"]
    floor = next((r for r in _rows(section) if r.get("design") == "floor"), {})
    lines = [
        "| design | req/s | x floor | p50 ms | p99 ms | p50 x floor | CPU us/req | x floor by CPU "
        "| core share | errors |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in _rows(section):
        if "skipped" in row:
            lines.append(f"| {row['label']} | skipped: {row['skipped']} | | | | | | | | |")
            continue
        p50_ratio = float(str(row["p50_ms"])) / float(str(floor["p50_ms"])) if floor.get("p50_ms") else None
        lines.append(
            f"| {row['label']} | {_num(row['rps'], ',.0f')} | {_num(row.get('rps_ratio_to_floor'), '.2f')}x "
            f"| {_num(row['p50_ms'], '.3f')} | {_num(row['p99_ms'], '.3f')} | {_num(p50_ratio, '.2f')}x "
            f"| {_num(row.get('cpu_us_per_request'), '.1f')} | {_num(row.get('cpu_ratio_to_floor'), '.2f')}x "
            f"| {_num(row.get('cpu_share'), '.0%')} | {row['errors']} |"
        )
    pinning = "server (and its Redis/nginx) on core 0, wrk on core 1" if section["pinned"] else "not pinned"
    lines += [
        "",
        f"wrk -t1 -c{section['connections']}, median of {section['repeats']} runs of "
        f"{section['duration_s']:g} s after a {section['warmup_s']:g} s warm-up, runs taken round the "
        f"designs in turn; {pinning}. CPU us/req: CPU time of the design's processes (server, and "
        "its Redis or nginx) per request; x floor by CPU: the floor's CPU per request over this one's, "
        "the req/s ratio each design would reach with a core to itself; core share: the CPU the design "
        "got while wrk ran (well under 100% means other work on the machine took the rest).",
    ]
    return lines


def stampede(section: Mapping[str, object]) -> list[str]:
    lines = [
        "| design | keys | requests | model calls, median (min-max) | calls per key | non-200 "
        "| Redis errors / breaker opens / lease fallbacks |",
        "|---|---:|---:|---:|---:|---:|---|",
    ]
    for row in _rows(section):
        trials = row["trials"]
        assert isinstance(trials, Sequence)
        non_200 = 0
        redis: list[str] = []
        for trial in trials:
            outcomes, counters = trial["outcomes"], trial["counters"]
            non_200 += sum(count for status, count in outcomes.items() if status != "200")
            if "redis_errors" in counters:
                redis.append(
                    f"{counters['redis_errors']}/{counters['breaker_opened']}/{counters['lease_fallbacks']}"
                )
        lines.append(
            f"| {row['label']} | {row['keys']} | {row['requests']} | {row['model_calls']} "
            f"({row['model_calls_min']}-{row['model_calls_max']}) | {_num(row['calls_per_key'], 'g')} "
            f"| {non_200} | {', '.join(redis) or '-'} |"
        )
    lines += [
        "",
        f"{section['trials']} trials per row, each on fresh processes and a fresh private Redis; all "
        f"requests sent at once, each on its own connection; model latency {section['model_latency_s']:g} "
        "s; requests spread over the replicas in turn; not pinned. Redis column: per trial, summed over "
        "the replicas.",
    ]
    return lines


def expiry(section: Mapping[str, object]) -> list[str]:
    lines = [
        "| design | requests | p50 ms | p99 ms | p99.9 ms | max ms | p99.9 / max from the send, ms "
        "| waited for the model | of which slow at the server | classes |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for row in _rows(section):
        classes = row["classes"]
        assert isinstance(classes, Mapping)
        listed = ", ".join(f"{name} {count}" for name, count in classes.items())
        lines.append(
            f"| {row['label']} | {row['requests']} | {_num(row['p50_ms'], '.3f')} "
            f"| {_num(row['p99_ms'], '.3f')} | {_num(row['p999_ms'], '.3f')} | {_num(row['max_ms'], '.3f')} "
            f"| {_num(row.get('p999_uncorrected_ms'), '.3f')} / {_num(row.get('max_uncorrected_ms'), '.3f')} "
            f"| {row['waited_requests']} ({_num(row['waited_share'], '.2%')}) "
            f"| {row.get('slow_at_server_requests', '-')} | {listed} |"
        )
    lines += [
        "",
        f"`python -m loadtest --rate {section['rate']:g} --duration {section['duration_s']:g}s "
        f"-c {section['connections']}` (open loop, latency from the due time), TTL {section['ttl_s']:g} s, "
        f"model {section['model_latency_s']:g} s, one key, after one warming request and 20 warm-up "
        f"requests; waited = latency > {section['waited_threshold_ms']:g} ms or class MISS/collapsed; "
        "slow at the server = over that measured from the actual send, not the due time (the rest were "
        "sent late because the load generator was held up).",
    ]
    return lines


def miss_path(section: Mapping[str, object]) -> list[str]:
    settings = section.get("settings", {})
    assert isinstance(settings, Mapping)
    ideal = (
        f"ideal: {section.get('ideal_calls')} calls x ({_num(section.get('call_ms'), 'g')} + "
        f"{settings.get('max_batch_size')} x {_num(section.get('item_ms'), 'g')} ms) = "
        f"{_num(section.get('ideal_wall_s'), '.3f')} s"
    )
    if "skipped" in section:
        return [f"Skipped: {section['skipped']}. ({ideal})"]
    lines = [
        "| model | requests | errors | model calls | items per call | wall s | x ideal | p50 ms | p99 ms "
        "| max ms | classes |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for row in _rows(section):
        classes = row["classes"]
        assert isinstance(classes, Mapping)
        listed = ", ".join(f"{name} {count}" for name, count in classes.items())
        lines.append(
            f"| {row['label']} | {row['requests']} | {row['errors']} | {row['model_calls']} "
            f"| {_num(row['items_per_call'], 'g')} | {_num(row['wall_s'], '.3f')} "
            f"| {_num(row['ratio_to_ideal'], '.2f')}x | {_num(row['p50_ms'], '.1f')} "
            f"| {_num(row['p99_ms'], '.1f')} | {_num(row['max_ms'], '.1f')} | {listed} |"
        )
    lines += [
        "",
        f'{settings.get("keys")} distinct cold keys (`{{"key": k}}` lines), `python -m loadtest --inputs '
        f"keys.jsonl --concurrency {settings.get('concurrency')} --n {settings.get('keys')} --client raw`, "
        f"one fresh service each (embedded cache), `--model-max-concurrency "
        f"{settings.get('model_max_concurrency')} --max-batch-size {settings.get('max_batch_size')} "
        f"--batch-wait-ms {settings.get('batch_wait_ms')} "
        f"--model-queue-max {settings.get('model_queue_max')}`; "
        f"model: {_num(section.get('call_ms'), 'g')} ms + {_num(section.get('item_ms'), 'g')} ms per item "
        f"per call; {ideal}; wall = the load test's duration; x ideal: wall / ideal (target for the "
        f"batched run: <= {_num(section.get('target_ratio'), 'g')}x).",
    ]
    return lines


def cluster(section: Mapping[str, object]) -> list[str]:
    if "skipped" in section:
        return [f"Skipped: {section['skipped']}"]
    settings = section["settings"]
    assert isinstance(settings, Mapping)
    lines = ["| hit path | req/s | p50 ms | p99 ms | CPU us/req | errors |", "|---|---:|---:|---:|---:|---:|"]
    for row in _rows({"rows": section.get("hit_path", [])}):
        if "skipped" in row:
            lines.append(f"| skipped: {row['skipped']} | | | | | |")
            continue
        lines.append(
            f"| {row['label']} | {_num(row['rps'], ',.0f')} | {_num(row['p50_ms'], '.3f')} "
            f"| {_num(row['p99_ms'], '.3f')} | {_num(row['cpu_us_per_request'], '.1f')} | {row['errors']} |"
        )
    lines += [
        "",
        "| stampede | replicas | keys | requests | model calls | non-200 | wall s "
        "| Redis errors / breaker opens / lease fallbacks |",
        "|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for row in _rows({"rows": section.get("stampede", [])}):
        outcomes, counters = row["outcomes"], row["counters"]
        assert isinstance(outcomes, Mapping)
        assert isinstance(counters, Mapping)
        non_200 = sum(count for status, count in outcomes.items() if status != "200")
        label = "Redis Cluster, 6 nodes" if row["redis"] == "cluster" else "one Redis"
        lines.append(
            f"| {label} | {row['replicas']} | {row['keys']} | {row['requests']} | {row['model_calls']} "
            f"| {non_200} | {_num(row['wall_s'], '.2f')} "
            f"| {counters['redis_errors']}/{counters['breaker_opened']}/{counters['lease_fallbacks']} |"
        )
    pinning = "server and its Redis nodes on core 0, wrk on core 1" if settings["pinned"] else "not pinned"
    lines += [
        "",
        f"Hit path: wrk -t1 -c{settings['connections']}, median of {settings['hit_repeats']} runs of "
        f"{settings['hit_duration_s']:g} s, rows taken in turn; {pinning}; CPU us/req counts the server and "
        "every Redis node. Stampede: one trial per row on fresh processes and a fresh Redis or cluster, "
        f"all requests at once, model latency {settings['model_latency_s']:g} s, not pinned.",
    ]
    return lines


def failover(section: Mapping[str, object]) -> list[str]:
    if "skipped" in section:
        return [f"Skipped: {section['skipped']}"]
    settings = section["settings"]
    assert isinstance(settings, Mapping)
    lines = [
        "| mode | primary | failover s | requests | non-2xx | slowest ms | model calls (per key) "
        "| HITs from failover + 2 s | of them from a replica's own copy |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in _rows(section):
        lines.append(
            f"| {row['mode']} | {row['how']} | {_num(row['failover_s'], '.2f')} | {row['requests']} "
            f"| {row['non_2xx']} | {_num(row['slowest_ms'], '.0f')} | {row['model_calls']:g} "
            f"({_num(row['model_calls_per_key'], 'g')}) | {row['late_hits']} of {row['late_requests']} "
            f"| {row['late_local_answers']:g} |"
        )
    lines += [
        "",
        f"Three replicas, every key warm, `--near-cache-seconds 0 --ttl 60 --redis-timeout "
        f"{settings['redis_timeout_s']:g}`, demo model {settings['model_latency_s']:g} s; open loop "
        f"{settings['rate']:g} requests/s over {settings['keys']} keys for {settings['duration_s']:g} s, "
        "the primary serving a hot key (in the cluster also the events channel) lost at "
        f"{settings['kill_at_s']:g} s; failover: until the cluster or the sentinels name a new primary. "
        "Fresh processes per row.",
    ]
    return lines


def targets(found: Sequence[Mapping[str, object]]) -> list[str]:
    lines = ["| target | measured | met | margin |", "|---|---|---|---|"]
    for t in found:
        met = {True: "met", False: "**not met**", None: "n/a"}[
            t["met"] if isinstance(t["met"], bool) else None
        ]
        lines.append(f"| {t['target']} | {t['measured']} | {met} | {t['margin']} |")
    return lines


def markdown(results: Mapping[str, object]) -> str:
    """The whole report; sections that did not run are left out."""

    def section(name: str) -> Mapping[str, object]:
        value = results.get(name, {})
        assert isinstance(value, Mapping)
        return value

    machine = section("machine")
    lines = ["# predcache benchmarks", "", f"Machine: {machine_line(machine)}", ""]
    if results.get("quick"):
        lines += ["**Quick run (`--quick`): smoke figures, not for comparison.**", ""]
    if "hit_path" in results:
        lines += ["## 1. Hit path", "", *hit_path(section("hit_path")), ""]
    if "stampede" in results:
        lines += ["## 2. Stampede: model calls for cold requests", "", *stampede(section("stampede")), ""]
    if "expiry" in results:
        lines += ["## 3. Expiry under steady open-loop load", "", *expiry(section("expiry")), ""]
    if "loadtest_ceiling" in results:
        ceiling = section("loadtest_ceiling")
        lines += ["## 4. Load tester ceiling (python -m loadtest vs wrk, floor-like server)", ""]
        lines += [loadtest_ceiling.markdown(dict(ceiling)), ""]
    if "miss_path" in results:
        lines += ["## 5. Miss path: distinct cold keys, one model call at a time", ""]
        lines += [*miss_path(section("miss_path")), ""]
    if "cluster" in results:
        lines += ["## 6. Redis Cluster beside one Redis", "", *cluster(section("cluster")), ""]
    if "failover" in results:
        lines += ["## 7. Failover under load", "", *failover(section("failover")), ""]
    if "memory" in results:
        lines += ["## 8. Memory: resident memory per cached prediction, byte bounds", ""]
        lines += [*memory.markdown(dict(section("memory"))), ""]
    if "llm_litellm" in results:
        lines += [
            "## 9. LLM gateway beside LiteLLM's proxy",
            "",
            llm_litellm.markdown(dict(section("llm_litellm"))),
        ]
    found = results.get("targets", [])
    assert isinstance(found, Sequence)
    lines += [
        "## Targets (issues 6, 10, 11 and 21)",
        "",
        *targets([t for t in found if isinstance(t, Mapping)]),
        "",
    ]
    lines.append(f"Total benchmark time: {_num(results.get('elapsed_s'), '.0f')} s.")
    return "\n".join(lines) + "\n"
