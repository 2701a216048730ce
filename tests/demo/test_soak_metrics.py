"""Known answers for the soak's pure computations (hitl.demo.management.commands.soak)."""

import random
from collections import Counter

import pytest

from hitl.demo.management.commands.soak import (
    latency_summary,
    max_concurrent,
    parse_stat,
    parse_vm_rss,
    percentile,
    process_report,
    rss_growth,
    server_errors,
    think_time,
)


def test_nearest_rank_percentile():
    values = [float(v) for v in range(1, 101)]  # 1..100
    assert percentile(values, 50) == 50.0
    assert percentile(values, 99) == 99.0
    assert percentile(values, 100) == 100.0
    assert percentile([3.0, 1.0, 2.0], 50) == 2.0
    assert percentile([], 99) is None


def test_latency_summary_in_milliseconds():
    out = latency_summary([0.010, 0.020, 0.030, 0.040])
    assert out == {"n": 4, "p50_ms": 20.0, "p95_ms": 40.0, "p99_ms": 40.0, "max_ms": 40.0}
    assert latency_summary([])["p99_ms"] is None


def test_rss_growth_compares_the_window_after_warmup_with_the_last_window():
    mb = 2**20
    # 100 MB for the first 10 minutes, then 110 MB: +10 %
    samples = [(float(t), 100 * mb if t < 600 else 110 * mb) for t in range(0, 1800, 15)]
    out = rss_growth(samples, warmup_s=300, window_s=120)
    assert out == {"warmup_mb": 100.0, "end_mb": 110.0, "growth": 0.1}
    flat = rss_growth([(float(t), 50 * mb) for t in range(0, 900, 15)], warmup_s=300)
    assert flat["growth"] == 0.0
    assert rss_growth([(0.0, mb)], warmup_s=300)["growth"] is None  # nothing after the warm-up


def test_parse_stat_survives_a_command_name_with_spaces_and_parentheses():
    # pid (comm) state ppid pgrp session tty tpgid flags minflt cminflt majflt cmajflt utime stime cutime cstime
    text = "4242 (celery (worker) x) S 17 4242 4242 0 -1 4194560 10 0 0 0 100 20 3 4 20 0 1 0"
    assert parse_stat(text) == (17, 127)


def test_parse_vm_rss_in_bytes():
    assert parse_vm_rss("Name:\tgunicorn\nVmRSS:\t  2048 kB\nThreads:\t4\n") == 2048 * 1024
    assert parse_vm_rss("Name:\tkthreadd\n") == 0


def test_max_concurrent_intervals():
    assert max_concurrent([]) == 0
    assert max_concurrent([(0, 10), (10, 20)]) == 1  # one ends as the next starts: never two at once
    assert max_concurrent([(0, 10), (5, 15), (6, 7)]) == 3
    assert max_concurrent([(0, 10), (11, 20), (12, 13)]) == 2


def test_think_time_stays_within_a_quarter_and_three_times_the_pace():
    rng = random.Random(0)
    times = [think_time(rng, 60.0) for _ in range(2000)]
    assert min(times) == pytest.approx(15.0) and max(times) == pytest.approx(180.0)  # both clips are hit
    assert 40.0 < sum(times) / len(times) < 70.0  # around the pace


def test_server_errors_count_only_5xx():
    statuses = Counter({"claim 200": 90, "claim 204": 3, "submit 201": 80, "submit 503": 2, "editor 500": 1})
    assert server_errors(statuses) == 3


def test_process_report_cpu_and_rss_per_group(monkeypatch):
    monkeypatch.setattr("os.sysconf", lambda name: 100)  # 100 clock ticks per second
    mb = 2**20
    rows = [
        {
            "t": float(t),
            "load1": 1.0,
            "web": {"pids": 3, "ticks": 50 * t, "rss": 200 * mb},  # half a core
            "interactive": {"pids": 2, "ticks": 0, "rss": 300 * mb},
        }
        for t in range(0, 601, 15)
    ]
    out = process_report(rows, warmup_s=60)
    assert out["web"]["cpu_percent_of_one_core"] == 50.0 and out["web"]["processes"] == 3
    assert out["web"]["rss"]["growth"] == 0.0
    assert out["interactive"]["cpu_percent_of_one_core"] == 0.0
    assert out["batch"] == {"found": False}  # never sampled
    assert out["load1"] == {"mean": 1.0, "max": 1.0}


def test_long_lived_processes_are_judged_apart_from_a_training_runs_own_process(monkeypatch):
    """A lane's worker and pool process stay flat while a per-run child comes and goes: the group's total
    jumps while the child lives, the long-lived processes' growth is 0, and the child's peak is reported."""
    monkeypatch.setattr("os.sysconf", lambda name: 100)
    mb = 2**20
    rows = []
    for t in range(0, 601, 15):
        child = 700 * mb if 540 <= t < 600 else 0  # a training run near the end
        resident = {"10": 150 * mb, "11": 550 * mb + (t // 15) * mb // 100}  # the pool process: +0.4 MB
        rows.append(
            {
                "t": float(t),
                "load1": 1.0,
                "batch": {"pids": 3, "ticks": 0, "rss": sum(resident.values()) + child, "resident": resident},
            }
        )
    batch = process_report(rows, warmup_s=60)["batch"]
    assert batch["rss"]["growth"] > 0.3  # the total sees the child
    assert batch["rss_resident"]["growth"] < 0.01 and set(batch["rss_per_process"]) == {"10", "11"}
    assert 0 < batch["rss_max_process_growth"] < 0.01
    assert batch["rss_short_lived_peak_mb"] == 700.0
    rows[-1]["batch"]["resident"] = {"10": 150 * mb}  # the pool process was replaced before the end
    assert set(process_report(rows, warmup_s=60)["batch"]["rss_per_process"]) == {"10"}
