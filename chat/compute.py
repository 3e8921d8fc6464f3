"""One thread for a serving process's model arithmetic: batched decode steps, predictions and loads.

    from chat.compute import COMPUTE
    slots = COMPUTE.run(predictor.predict, text)   # runs on the compute thread, returns its result

Why one thread: torch's CPU kernels run on OpenMP (the libgomp in torch's wheel), and every thread that
runs a parallel torch operation gets an OpenMP team of its own, kept as long as that thread lives. With two
teams on a 2-core machine each of the hundreds of parallel regions in a decode step wakes its helper
through the kernel instead of finding it spinning. Measured on 2 cores (AMD EPYC, AVX2), a model loaded in
one thread and decoded in another: the demo's 4x256 GPT-2 batcher step took 7.9 ms in int8 and 7.4 in
fp32; loaded and decoded in the same thread, 3.0 and 4.9 ms (timed by hand; docs/benchmarks.md); one 256x768
product 52 us in the loading thread, 200 us in a second one; the 12x768 base's int8 step 12.8 vs 20.5 ms.
`OMP_WAIT_POLICY=ACTIVE` and `GOMP_SPINCOUNT` did not help. So the app runs all of its model work here:
each `ContinuousBatcher` (chat/batching.py) attaches itself while it has requests and gets one turn per
loop, and `run(fn)` puts any other call (a fill-mask prediction, a model load) between two turns.

Jobs run one at a time, so a load also never overlaps a decode step. The thread ends after `idle_s` without
work (a later call starts a new one) and at interpreter exit.
"""

from __future__ import annotations

import atexit
import collections
import logging
import threading
from concurrent.futures import Future, ThreadPoolExecutor

log = logging.getLogger("chat")

IDLE_S = 10.0  # the thread ends after this long without work


class ComputeThread:
    def __init__(self, idle_s: float = IDLE_S, name: str = "compute"):
        self.idle_s, self.name = idle_s, name
        self._cond = threading.Condition()
        self._jobs: collections.deque = collections.deque()
        self._loops: list = []  # objects with has_work() -> bool and turn(): the batchers with requests
        self._thread: threading.Thread | None = None
        self._stopping = False

    @property
    def alive(self) -> bool:
        return self._thread is not None

    def in_thread(self) -> bool:
        return threading.current_thread() is self._thread

    def run(self, fn, *args, **kwargs):
        """fn(*args, **kwargs) on the compute thread; its result, or its exception raised here. Called from
        the compute thread itself (a job that calls run), fn simply runs."""
        if self.in_thread():
            return fn(*args, **kwargs)
        return self.submit(fn, *args, **kwargs).result()

    def submit(self, fn, *args, **kwargs) -> Future:
        """Queue fn(*args, **kwargs) for the compute thread and return at once: a Future of its result. (From the
        compute thread itself, waiting on that Future would wait forever.)"""
        future: Future = Future()
        with self._cond:
            self._refuse_after_stop()
            self._jobs.append((future, fn, args, kwargs))
            self._start()
            self._cond.notify_all()
        return future

    def attach(self, loop) -> None:
        """`loop` has work: give it a turn each time round until it has none."""
        with self._cond:
            self._refuse_after_stop()
            if loop not in self._loops:
                self._loops.append(loop)
            self._start()
            self._cond.notify_all()

    def wake(self) -> None:
        """Something a loop waits on changed (a request cancelled)."""
        with self._cond:
            self._cond.notify_all()

    def stop(self, timeout: float = 5.0) -> None:
        """End the thread after its current job or turn (at exit: a thread still inside torch when the
        interpreter goes down ends the process with "terminate called without an active exception")."""
        with self._cond:
            thread, self._stopping = self._thread, True
            self._cond.notify_all()
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)

    # -- the thread ----------------------------------------------------------------
    def _refuse_after_stop(self) -> None:  # under self._cond: nothing would ever run it
        if self._stopping:
            raise RuntimeError("the compute thread has stopped (the process is exiting)")

    def _start(self) -> None:  # under self._cond
        if self._thread is None:
            self._thread = threading.Thread(target=self._main, name=self.name, daemon=True)
            self._thread.start()

    def _has_work(self) -> bool:
        return bool(self._stopping or self._jobs or any(loop.has_work() for loop in self._loops))

    def _main(self) -> None:
        while True:
            with self._cond:
                if not self._cond.wait_for(self._has_work, timeout=self.idle_s) or self._stopping:
                    self._thread = None  # run() and attach() start a new one
                    self._loops = [loop for loop in self._loops if loop.has_work()]
                    for future, *_ in self._jobs:  # only at stop(): nobody will run them
                        future.set_exception(RuntimeError("the compute thread stopped"))
                    self._jobs.clear()
                    return
                job = self._jobs.popleft() if self._jobs else None
                loops = list(self._loops)
            if job is not None:  # one job, then a turn of each loop: a stream of jobs cannot stall replies
                future, fn, args, kwargs = job
                if future.set_running_or_notify_cancel():
                    try:
                        future.set_result(fn(*args, **kwargs))
                    except BaseException as e:  # the caller gets it
                        future.set_exception(e)
                del job, future, fn, args, kwargs  # nothing of a finished job is held while idle
            for loop in loops:
                if loop.has_work():
                    try:
                        loop.turn()
                    except Exception:  # a loop's own failures end its requests; this keeps the thread alive
                        log.exception("compute thread: a turn failed")
            loops = loop = None  # nothing of this round is held while the thread waits (an unused model can be freed)
            with self._cond:  # a loop without work is let go
                self._loops = [loop for loop in self._loops if loop.has_work()]


def in_own_thread(fn, *args, **kwargs):
    """fn(*args, **kwargs) in a new thread that ends when it returns (and its OpenMP team with it): for a long job
    that should not hold the compute thread, run from a thread that lives on (a Gradio worker)."""
    with ThreadPoolExecutor(1, thread_name_prefix="one-job") as pool:  # its worker is joined on leaving
        return pool.submit(fn, *args, **kwargs).result()


COMPUTE = ComputeThread()
atexit.register(COMPUTE.stop)
