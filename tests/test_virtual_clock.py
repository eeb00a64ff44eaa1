"""The virtual clock the runtime's tests drive time with: it moves only while every
thread of the run waits on it, and by exactly as much as the earliest wait asks."""

from __future__ import annotations

import threading

from virtual_clock import VirtualClock


def test_time_jumps_to_each_deadline_in_turn_when_every_thread_waits() -> None:
    clock = VirtualClock(start=100.0)
    woke: list[tuple[str, float]] = []
    lock = threading.Lock()

    def sleeper(name: str, naps: list[float]) -> None:
        for nap in naps:
            clock.sleep(nap)
            with lock:
                woke.append((name, clock.monotonic()))

    with clock.joined():
        threads = [clock.spawn(lambda: sleeper("a", [0.5, 0.5]), "a"),
                   clock.spawn(lambda: sleeper("b", [0.3, 1.0]), "b")]
        clock.sleep(2.0)
    for thread in threads:
        thread.join(5)
    assert sorted(woke, key=lambda w: w[1]) == [("b", 100.3), ("a", 100.5), ("a", 101.0),
                                                ("b", 101.3)]
    assert clock.monotonic() == 102.0


def test_time_stands_still_while_a_thread_of_the_run_works() -> None:
    clock = VirtualClock(start=0.0)
    working = threading.Event()
    done = threading.Event()

    def worker() -> None:
        working.set()
        done.wait(5)  # real work, not a wait on the clock

    with clock.joined():
        thread = clock.spawn(worker, "worker")
        assert working.wait(5)
        timer = threading.Timer(0.2, done.set)
        timer.start()
        clock.sleep(1.0)  # cannot end before the worker has finished its work
        assert done.is_set()
    thread.join(5)
    assert clock.monotonic() == 1.0


def test_a_notify_wakes_a_waiter_without_moving_time() -> None:
    clock = VirtualClock(start=0.0)
    cond = threading.Condition(threading.Lock())
    state = {"ready": False, "seen_at": None}

    def waiter() -> None:
        with cond:
            while not state["ready"]:
                clock.wait(cond, 60.0)
            state["seen_at"] = clock.monotonic()

    def notifier() -> None:
        clock.sleep(0.25)
        with cond:
            state["ready"] = True
            clock.notify(cond)

    with clock.joined():  # busy while it starts them: time cannot run ahead of either
        clock.spawn(waiter, "waiter")
        clock.spawn(notifier, "notifier")
        clock.sleep(1.0)
    assert state["seen_at"] == 0.25
