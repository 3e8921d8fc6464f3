"""chat/compute.py: one thread runs every job and every batcher turn, in order, and passes errors back."""

from __future__ import annotations

import threading
import time

import pytest

from chat.compute import ComputeThread


class Loop:
    """A stand-in batcher: `work` turns to take, each noting the thread it ran on."""

    def __init__(self, work: int):
        self.work, self.threads = work, []

    def has_work(self) -> bool:
        return self.work > 0

    def turn(self) -> None:
        self.threads.append(threading.current_thread())
        self.work -= 1


def test_jobs_run_on_one_thread_and_return_or_raise():
    compute = ComputeThread(idle_s=5)
    try:
        names = {compute.run(lambda: threading.current_thread().name) for _ in range(3)}
        assert names == {"compute"}
        assert compute.run(lambda a, b=0: a + b, 2, b=3) == 5
        with pytest.raises(ZeroDivisionError):
            compute.run(lambda: 1 / 0)
        assert compute.run(compute.run, lambda: "nested") == "nested"  # a job that calls run does not wait on itself
    finally:
        compute.stop()
    assert not compute.alive


def test_jobs_from_many_threads_never_overlap():
    compute, running, overlaps = ComputeThread(idle_s=5), [0], []

    def job():
        running[0] += 1
        overlaps.append(running[0])
        time.sleep(0.002)
        running[0] -= 1

    threads = [threading.Thread(target=lambda: [compute.run(job) for _ in range(10)]) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    compute.stop()
    assert len(overlaps) == 40 and max(overlaps) == 1


def test_a_loop_gets_turns_between_jobs_and_is_let_go_when_idle():
    compute = ComputeThread(idle_s=0.2)
    loop = Loop(work=50)
    compute.attach(loop)
    compute.run(lambda: None)
    deadline = time.time() + 10
    while (loop.work or compute.alive) and time.time() < deadline:
        time.sleep(0.01)
    assert loop.work == 0 and {t.name for t in loop.threads} == {"compute"}
    assert not compute.alive and not compute._loops  # idle: the loop is let go and the thread ends
    loop.work = 3  # new work starts a new thread
    compute.attach(loop)
    deadline = time.time() + 10
    while loop.work and time.time() < deadline:
        time.sleep(0.01)
    assert loop.work == 0
    compute.stop()


def test_a_failing_turn_does_not_end_the_thread():
    compute = ComputeThread(idle_s=5)

    class Broken(Loop):
        def turn(self):
            self.work -= 1
            raise RuntimeError("planted")

    broken = Broken(work=2)
    compute.attach(broken)
    assert compute.run(lambda: "still here") == "still here"
    compute.stop()


def test_after_stop_calls_are_refused_not_left_waiting():
    compute = ComputeThread(idle_s=5)
    assert compute.run(lambda: 1) == 1
    compute.stop()
    with pytest.raises(RuntimeError, match="stopped"):
        compute.run(lambda: 1)
    with pytest.raises(RuntimeError, match="stopped"):
        compute.attach(Loop(work=1))


def test_a_long_job_aside_runs_in_a_thread_that_ends_with_it():
    from chat.compute import in_own_thread

    ran = []
    assert in_own_thread(lambda x: ran.append(threading.current_thread()) or x * 2, 21) == 42
    assert ran[0] is not threading.current_thread() and not ran[0].is_alive()
    with pytest.raises(ValueError, match="planted"):
        in_own_thread(lambda: (_ for _ in ()).throw(ValueError("planted")))
