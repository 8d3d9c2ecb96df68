"""The issue's targets checked against a run's figures: each one met or not, and by how much."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass

EMBEDDED_MIN_RATIO = 0.85
REDIS_MIN_RATIO = 0.6  # by req/s, where the server shares its core with Redis
REDIS_CPU_MIN_RATIO = 0.8  # by CPU per request: the server's own cost
POST_CPU_MIN_RATIO = 0.75
HIT_P50_MAX_FLOOR_MULTIPLE = 1.2
EXPIRY_P999_MAX_HIT_P99_MULTIPLE = 3.0
MISS_PATH_MAX_IDEAL_MULTIPLE = 1.25


@dataclass(frozen=True)
class TargetResult:
    """One target: what it asks, what was measured, and the verdict in words."""

    name: str
    target: str
    measured: str
    met: bool | None
    margin: str

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


def _rows(section: Mapping[str, object], key: str) -> dict[str, Mapping[str, object]]:
    rows = section.get("rows", [])
    assert isinstance(rows, list)
    return {str(row[key]): row for row in rows if isinstance(row, Mapping)}


def _number(row: Mapping[str, object] | None, field: str) -> float | None:
    if row is None or field not in row:
        return None
    value = row[field]
    assert isinstance(value, int | float)
    return float(value)


def _at_least(name: str, target: str, measured: float | None, bound: float, unit: str) -> TargetResult:
    if measured is None:
        return TargetResult(name, target, "not measured", None, "")
    met = measured >= bound
    gap = measured - bound
    margin = f"{'above' if met else 'short'} by {abs(gap):.3f}{unit} ({abs(gap) / bound:.1%})"
    return TargetResult(name, target, f"{measured:.3f}{unit}", met, margin)


def _at_most(name: str, target: str, measured: float | None, bound: float, unit: str) -> TargetResult:
    if measured is None:
        return TargetResult(name, target, "not measured", None, "")
    met = measured <= bound
    gap = measured - bound
    margin = f"{'under' if met else 'over'} by {abs(gap):.3g} {unit} ({abs(gap) / bound:.0%})"
    return TargetResult(name, target, f"{measured:.3g} {unit}", met, margin)


def evaluate(results: Mapping[str, Mapping[str, object]]) -> list[TargetResult]:
    """Every target the figures in `results` can answer; a section that was skipped gives `met=None`."""
    hit = _rows(results.get("hit_path", {}), "design")
    stampede = results.get("stampede", {})
    expiry = _rows(results.get("expiry", {}), "system")
    found: list[TargetResult] = [
        _at_least(
            "hit_embedded_rps",
            f"embedded cache >= {EMBEDDED_MIN_RATIO}x the floor's req/s",
            _number(hit.get("embedded"), "rps_ratio_to_floor"), EMBEDDED_MIN_RATIO, "x",
        ),
        _at_least(
            "hit_redis_rps",
            f"Redis >= {REDIS_MIN_RATIO}x the floor's req/s",
            _number(hit.get("redis"), "rps_ratio_to_floor"), REDIS_MIN_RATIO, "x",
        ),
        _at_least(
            "hit_embedded_cpu",
            f"embedded cache >= {EMBEDDED_MIN_RATIO}x the floor, by CPU per request",
            _number(hit.get("embedded"), "cpu_ratio_to_floor"), EMBEDDED_MIN_RATIO, "x",
        ),
        _at_least(
            "hit_redis_cpu",
            f"Redis (near-cache) >= {REDIS_CPU_MIN_RATIO}x the floor, by CPU per request",
            _number(hit.get("redis"), "cpu_ratio_to_floor"), REDIS_CPU_MIN_RATIO, "x",
        ),
        _at_least(
            "hit_post_cpu",
            f"POST /predict >= {POST_CPU_MIN_RATIO}x the (GET) floor, by CPU per request",
            _number(hit.get("post"), "cpu_ratio_to_floor"), POST_CPU_MIN_RATIO, "x",
        ),
        _at_most(
            "hit_embedded_p50", f"hit p50 <= {HIT_P50_MAX_FLOOR_MULTIPLE}x the floor's p50 (embedded)",
            _number(hit.get("embedded"), "p50_ratio_to_floor"), HIT_P50_MAX_FLOOR_MULTIPLE, "x",
        ),
        _at_most(
            "hit_redis_p50", f"hit p50 <= {HIT_P50_MAX_FLOOR_MULTIPLE}x the floor's p50 (Redis)",
            _number(hit.get("redis"), "p50_ratio_to_floor"), HIT_P50_MAX_FLOOR_MULTIPLE, "x",
        ),
    ]  # fmt: skip
    stampede_rows = stampede.get("rows", [])
    assert isinstance(stampede_rows, Sequence)
    predcache_rows = [r for r in stampede_rows if isinstance(r, Mapping) and r["fleet"] != "seed"]
    if predcache_rows:
        off = [r for r in predcache_rows if not r["meets_target"]]
        measured = ", ".join(
            f"{r['replicas']}r/{r['keys']}k: {r['model_calls_min']}-{r['model_calls_max']}"
            for r in predcache_rows
        )
        margin = (
            "exact in every trial"
            if not off
            else "over by up to "
            + ", ".join(
                f"{int(str(r['model_calls_max'])) - int(str(r['keys']))} calls "
                f"({r['replicas']} replicas, {r['keys']} keys)"
                for r in off
            )
        )
        found.append(
            TargetResult(
                "stampede_one_call_per_key",
                "stampede: exactly 1 model call per key, 1 and 3 replicas (every trial)",
                measured,
                not off,
                margin,
            )
        )
    else:
        found.append(TargetResult("stampede_one_call_per_key", "stampede", "not measured", None, ""))
    predcache = expiry.get("predcache")
    waited = _number(predcache, "waited_requests")
    found.append(
        TargetResult(
            "expiry_no_wait",
            "expiry: zero requests wait for the model after warm-up",
            "not measured" if waited is None else f"{waited:.0f} waited",
            None if waited is None else waited == 0,
            "" if waited is None else ("none waited" if waited == 0 else f"{waited:.0f} too many"),
        )
    )
    hit_p99 = _number(hit.get("redis"), "p99_ms")
    p999 = _number(predcache, "p999_ms")
    if hit_p99 is None or p999 is None:
        found.append(TargetResult("expiry_p999", "expiry: p99.9 <= 3x hit p99", "not measured", None, ""))
    else:
        bound = EXPIRY_P999_MAX_HIT_P99_MULTIPLE * hit_p99
        result = _at_most(
            "expiry_p999",
            f"expiry: p99.9 <= {EXPIRY_P999_MAX_HIT_P99_MULTIPLE:g}x hit p99 (Redis row: {hit_p99:.3g} ms)",
            p999,
            bound,
            "ms",
        )
        found.append(result)
    p999_at_server = _number(predcache, "p999_uncorrected_ms")
    if hit_p99 is not None and p999_at_server is not None:
        found.append(
            _at_most(
                "expiry_p999_at_server",
                f"expiry p99.9 from the send (without the tester's late starts) <= "
                f"{EXPIRY_P999_MAX_HIT_P99_MULTIPLE:g}x hit p99",
                p999_at_server,
                EXPIRY_P999_MAX_HIT_P99_MULTIPLE * hit_p99,
                "ms",
            )
        )
    hit_class_p99 = _number(predcache, "hit_class_p99_ms")
    if hit_class_p99 is not None and p999 is not None:
        found.append(
            _at_most(
                "expiry_p999_same_run",
                f"expiry (issue 14): p99.9 <= {EXPIRY_P999_MAX_HIT_P99_MULTIPLE:g}x the same run's HIT p99 "
                f"({hit_class_p99:.3g} ms)",
                p999,
                EXPIRY_P999_MAX_HIT_P99_MULTIPLE * hit_class_p99,
                "ms",
            )
        )
    batched = _rows(results.get("miss_path", {}), "variant").get("batched")
    errors = _number(batched, "errors")
    found.append(
        _at_most(
            "miss_path_batched",
            f"miss path: batched run <= {MISS_PATH_MAX_IDEAL_MULTIPLE:g}x the ideal wall time, no errors"
            + ("" if not errors else f" ({errors:.0f} errors)"),
            _number(batched, "ratio_to_ideal") if not errors else None,
            MISS_PATH_MAX_IDEAL_MULTIPLE,
            "x",
        )
    )
    found.append(_cluster_stampede(results.get("cluster", {})))
    found.append(_failover(results.get("failover", {})))
    found += _memory(results.get("memory", {}))
    return found


MEMORY_MAX_BYTES_PER_ENTRY = 1536


def _memory(section: Mapping[str, object]) -> list[TargetResult]:
    """Issue 21: a cached ~150-byte prediction under 1.5 KB of resident memory (embedded and over
    Redis with the near-cache), and each byte bound held as resident memory within its slack."""
    listed = section.get("rows", [])
    assert isinstance(listed, Sequence)
    rows = [row for row in listed if isinstance(row, Mapping)]
    per_entry = [row for row in rows if row.get("kind") == "per_entry"]
    worst = max(per_entry, key=lambda row: float(row["bytes_per_entry"]), default=None)
    found = [
        _at_most(
            "memory_per_entry",
            f"memory: a cached ~150-byte prediction < {MEMORY_MAX_BYTES_PER_ENTRY} B resident (worst row"
            + ("" if worst is None else f": {worst['cache']}, {worst['entries']:,}")
            + ")",
            _number(worst, "bytes_per_entry"),
            MEMORY_MAX_BYTES_PER_ENTRY,
            "B",
        )
    ]
    for row in (row for row in rows if row.get("kind") == "bound"):
        limit = float(row["bound_mib"]) + float(row["slack_mib"])
        found.append(
            _at_most(
                f"memory_{str(row['setting']).lower()}",
                f"memory: {row['setting']}={row['bound_mib']:g} MiB keeps RSS growth within it + "
                f"{row['slack_mib']:g} MiB slack ({row['prediction_bytes']:,}-byte predictions)",
                _number(row, "growth_peak_mib"),
                limit,
                "MiB",
            )
        )
    return found


def _failover(section: Mapping[str, object]) -> TargetResult:
    """Issue 11: a primary lost under load costs no request, at most 2 model calls per key, and
    Redis answers again (not the replicas' own copies) from the failover + 2 s."""
    measured_rows = section.get("rows", [])
    assert isinstance(measured_rows, Sequence)
    rows = [row for row in measured_rows if isinstance(row, Mapping)]
    name = "failover_costs_no_request"
    target = (
        "failover: no non-2xx, slowest <= model + budget + 1 s, <= 2 calls per key, HITs from Redis again"
    )
    if not rows:
        return TargetResult(name, target, "not measured", None, "")
    off = [
        r
        for r in rows
        if r["non_2xx"]
        or r["slowest_ms"] > r["slowest_bound_ms"]
        or r["model_calls_per_key"] > 2
        or r["late_hits"] != r["late_requests"]
        or r["late_local_answers"]
    ]
    measured = "; ".join(
        f"{r['mode']} {r['how']}: {r['non_2xx']} non-2xx, slowest {r['slowest_ms']} ms, "
        f"{r['model_calls_per_key']} calls/key, {r['late_hits']}/{r['late_requests']} HITs"
        for r in rows
    )
    margin = "every run" if not off else "missed in " + ", ".join(f"{r['mode']} {r['how']}" for r in off)
    return TargetResult(name, target, measured, not off, margin)


def _cluster_stampede(section: Mapping[str, object]) -> TargetResult:
    """Issue 11: the same one model call per key over a Redis Cluster as over one Redis."""
    measured_rows = section.get("stampede", [])
    assert isinstance(measured_rows, Sequence)
    rows = [row for row in measured_rows if isinstance(row, Mapping) and row["redis"] == "cluster"]
    name, target = "cluster_stampede_one_call_per_key", "stampede over a Redis Cluster: 1 model call per key"
    if not rows:
        return TargetResult(name, target, "not measured", None, "")
    measured = ", ".join(f"{r['replicas']}r/{r['keys']}k: {r['model_calls']}" for r in rows)
    off = [r for r in rows if not r["meets_target"]]
    margin = "exact" if not off else f"over in {len(off)} of {len(rows)} rows"
    return TargetResult(name, target, measured, not off, margin)
