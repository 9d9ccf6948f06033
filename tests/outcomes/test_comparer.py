"""Comparisons off the loop: the comparison process answers each job once, a full queue and a
lost process are `not compared`, and a stuck process is replaced."""

from __future__ import annotations

import asyncio
import json
import os
import signal

from meshmirror.outcomes.compare import Comparison
from meshmirror.outcomes.compare_inputs import CompareSettings
from meshmirror.outcomes.compare_job import CompareJob, RawSide
from meshmirror.outcomes.comparer import Comparer

H = (("content-type", "application/json"),)


def job(a: object, b: object) -> CompareJob:
    return CompareJob(
        RawSide(200, H, json.dumps(a).encode()),
        RawSide(200, H, json.dumps(b).encode()),
        CompareSettings.build(),
    )


async def test_the_process_compares_off_the_loop_and_answers_each_job_once() -> None:
    comparer = Comparer()
    got: list[Comparison] = []
    try:
        comparer.submit(job({"v": 1}, {"v": 2}), got.append)
        comparer.submit(job({"v": 1}, {"v": 1}), got.append)
        assert got == []  # never inside submit
        await comparer.drain(30)
        assert [c.fields for c in got] == [("body:/v",), ()]
        assert comparer.pid is not None and comparer.starts == 1
    finally:
        comparer.close()
    assert comparer.pid is None


async def test_a_full_queue_is_not_compared_and_a_stuck_process_is_replaced() -> None:
    comparer = Comparer(max_waiting=2, answer_limit=0.5)
    got: list[Comparison] = []
    try:
        for _ in range(3):
            comparer.submit(job({"v": 1}, {"v": 2}), got.append)
        assert [c.not_compared for c in got] == ["busy"]  # at once, the third
        await comparer.drain(30)
        assert [c.not_compared for c in got] == ["busy", "", ""]
        pid = comparer.pid
        assert pid is not None
        os.kill(pid, signal.SIGSTOP)  # stuck: the next job is never answered
        comparer.submit(job({"v": 1}, {"v": 1}), got.append)
        for _ in range(500):
            if len(got) == 4:
                break
            await asyncio.sleep(0.01)
        assert got[3].not_compared == "lost" and "killed" in got[3].note, got[3]
        assert comparer.pid is None
        comparer.submit(job({"v": 1}, {"v": 1}), got.append)  # a new process
        await comparer.drain(30)
        assert got[4].match and comparer.starts == 2 and comparer.pid not in (None, pid)
    finally:
        comparer.close()


async def test_without_a_process_a_thread_compares() -> None:
    comparer = Comparer(use_process=False)
    got: list[Comparison] = []
    comparer.submit(job({"v": 1}, {"v": 2}), got.append)
    await comparer.drain(30)
    comparer.close()
    assert [c.fields for c in got] == [("body:/v",)]


def test_without_a_running_loop_the_job_runs_at_once() -> None:
    got: list[Comparison] = []
    Comparer().submit(job({"v": 1}, {"v": 2}), got.append)
    assert [c.fields for c in got] == [("body:/v",)]
