"""The sidecar's own Prometheus exposition reads back, through prometheus_client's parser,
as the numbers the fixups counted."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

from sidecar.fixer.metrics import Metrics


def samples(metrics: Metrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = metrics.exposition().decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def test_counters_read_back_by_label() -> None:
    m = Metrics()
    m.runs.labels(trigger="manual", result="verified").inc()
    m.runs.labels(trigger="manual", result="verified").inc()
    m.interface_fixups.labels(action="reattach", result="done").inc()
    got = samples(m)
    assert got[("bridge_migration_fixup_runs_total", (("result", "verified"), ("trigger", "manual")))] == 2
    assert got[("bridge_migration_interface_fixups_total", (("action", "reattach"), ("result", "done")))] == 1


def test_a_histogram_has_cumulative_buckets_a_count_and_a_sum() -> None:
    m = Metrics()
    for value in (0.005, 0.3, 0.3, 100.0):
        m.duration.observe(value)
    got = samples(m)
    bucket = "bridge_migration_fixup_duration_seconds_bucket"
    assert got[(bucket, (("le", "0.01"),))] == 1
    assert got[(bucket, (("le", "0.25"),))] == 1
    assert got[(bucket, (("le", "0.5"),))] == 3
    assert got[(bucket, (("le", "60.0"),))] == 3
    assert got[(bucket, (("le", "+Inf"),))] == 4
    assert got[("bridge_migration_fixup_duration_seconds_count", ())] == 4
    assert abs(got[("bridge_migration_fixup_duration_seconds_sum", ())] - 100.605) < 1e-9


def test_every_family_is_typed_even_before_anything_happened() -> None:
    text = Metrics().exposition().decode()
    for name, kind in (
        ("bridge_migration_fixup_runs_total", "counter"),
        ("bridge_migration_interface_fixups_total", "counter"),
        ("bridge_migration_nic_restores_total", "counter"),
        ("bridge_migration_fixup_duration_seconds", "histogram"),
        ("bridge_migration_event_to_fixup_done_seconds", "histogram"),
    ):
        assert f"# TYPE {name} {kind}\n" in text
    assert "bridge_migration_fixup_runs_total{" not in text  # no sample before the first run


def test_label_values_are_escaped() -> None:
    m = Metrics()
    m.restores.labels(reason='odd "quoted"\\value\nline').inc()
    [(key, value)] = [(k, v) for k, v in samples(m).items() if k[0] == "bridge_migration_nic_restores_total"]
    assert key[1] == (("reason", 'odd "quoted"\\value\nline'),)
    assert value == 1
