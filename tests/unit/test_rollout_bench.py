"""``benchmarks/rollout.py``'s per-phase summary (pure logic, no servers)."""

from __future__ import annotations

from rich.console import Console


def test_phase_table_counts_failures_and_the_versions_that_answered(benchmark_script):
    bench = benchmark_script("rollout")
    records = ([("before", 0.010, "vOld", 0.0)] * 9 + [("during", 0.020, "vOld", 1.0)] * 5
               + [("during", 0.030, "vNew", 2.0), ("during", 0.5, "error UNAVAILABLE: down", 3.0)]
               + [("after", 0.012, "vNew", 4.0)] * 4)
    console = Console(width=200, record=True)
    console.print(bench.phase_table(records))
    rows = [[c.strip() for c in line.strip().strip("│").split("│")]
            for line in console.export_text().splitlines() if line.startswith("│")]
    by_phase = {cells[0]: cells[1:] for cells in rows}
    assert by_phase["before"][:3] == ["9", "0", "10.0"]
    assert by_phase["during"][:2] == ["7", "1"] and by_phase["during"][4] == "vNew, vOld"
    assert by_phase["after"][:2] == ["4", "0"] and by_phase["after"][4] == "vNew"
