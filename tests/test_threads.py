"""Thread counts for local models (rag_app.llm.threads): never more than the cores this process may use, one
free core for generation, and only the cores nobody else is using for the prompt."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from rag_app.llm import threads
from rag_app.llm.threads import Threads, cpu_budget, plan_threads


@pytest.mark.parametrize(
    ("budget", "busy", "expected"),
    [(1, 0, Threads(1, 1)), (2, 0, Threads(1, 2)), (2, 1, Threads(1, 1)), (2, 5, Threads(1, 1)), (8, 3, Threads(7, 5))],
)
def test_plan(budget: int, busy: int, expected: Threads) -> None:
    assert plan_threads(budget, busy) == expected


def test_a_fixed_count_is_used_for_both() -> None:
    assert plan_threads(8, 3, fixed=3) == Threads(3, 3)


def test_the_budget_is_the_affinity_within_the_cgroup_quota(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(threads.os, "sched_getaffinity", lambda pid: set(range(64)))
    quota = tmp_path / "cpu.max"
    quota.write_text("150000 100000\n")  # 1.5 CPUs
    monkeypatch.setattr(threads, "_CGROUP_V2", quota)
    assert cpu_budget() == 2
    quota.write_text("max 100000\n")
    assert cpu_budget() == 64


def test_busy_elsewhere_reads_the_run_queue(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    loadavg = tmp_path / "loadavg"
    loadavg.write_text("2.50 1.00 0.50 3/412 999\n")
    real_path = threads.Path
    monkeypatch.setattr(threads, "Path", lambda p: loadavg if p == "/proc/loadavg" else real_path(p))
    assert threads.busy_elsewhere() == 2  # three runnable, one of them the asker


@pytest.mark.e2e
def test_llama_cpp_gets_the_planned_threads_per_request(real_llm: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[tuple[int, int]] = []
    ctx = real_llm.client._ctx
    original = ctx.set_n_threads
    monkeypatch.setattr(ctx, "set_n_threads", lambda g, p: (seen.append((g, p)), original(g, p))[1])
    monkeypatch.setattr("rag_app.llm.llamacpp.plan_threads", lambda fixed=None: Threads(1, 1))
    real_llm.invoke("Hi", max_new_tokens=2)
    assert seen == [(1, 1)]
