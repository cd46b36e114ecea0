"""The embedded dispatcher's wake-up: web workers notify a Unix datagram socket after each
durable accept; the dispatcher claims new work then instead of at its next poll."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import requests

from handlers.leadsquared.simulator import create_leadsquared_simulator
from handlers.simulation import ServedApp
from service.pipeline.wakeup import Notifier, Waiter, wakeup_address
from tests.support import (
    LSQ_ACCESS_KEY,
    LSQ_SECRET_KEY,
    ROOT,
    Process,
    base_config,
    post_generic,
    sim_calls,
    wait_until,
    write_config,
)


def notify_from_another_process(address: str | bytes) -> None:
    code = f"from service.pipeline.wakeup import Notifier; Notifier({address!r}).notify()"
    subprocess.run([sys.executable, "-c", code], cwd=str(ROOT), check=True, timeout=30)


def test_a_notification_from_another_process_wakes_the_waiter(tmp_path: Path) -> None:
    address = wakeup_address(tmp_path / "leadrelay.db")
    assert address == str(tmp_path / "leadrelay.db") + ".wakeup"
    with Waiter(address) as waiter:
        assert waiter.listening
        assert waiter.wait(0) is False
        notify_from_another_process(address)
        notify_from_another_process(address)
        assert waiter.wait(30) is True
        assert waiter.wait(0) is False  # a burst of notifications wakes the loop once
    assert not os.path.exists(address)


def test_notifying_without_a_dispatcher_never_fails(tmp_path: Path) -> None:
    Notifier(wakeup_address(tmp_path / "leadrelay.db")).notify()
    Notifier(str(tmp_path / "no-such-dir" / "x.wakeup")).notify()
    # A dispatcher that stopped reading: its buffer fills, the sender still never blocks.
    address = wakeup_address(tmp_path / "full.db")
    with Waiter(address) as waiter:
        notifier = Notifier(address)
        for _ in range(5000):
            notifier.notify()
        assert waiter.wait(5) is True


def test_a_wake_from_the_same_process_and_a_stale_socket_file(tmp_path: Path) -> None:
    address = wakeup_address(tmp_path / "leadrelay.db")
    assert isinstance(address, str)
    left_over = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    left_over.bind(address)  # as a dispatcher killed with -9 leaves it
    left_over.close()
    with Waiter(address) as waiter:
        assert waiter.listening
        waiter.wake()
        assert waiter.wait(30) is True
        notify_from_another_process(address)
        assert waiter.wait(30) is True


def test_a_data_directory_too_long_for_a_socket_path_uses_an_abstract_socket(tmp_path: Path) -> None:
    deep = tmp_path / ("d" * 120)
    deep.mkdir()
    address = wakeup_address(deep / "leadrelay.db")
    assert isinstance(address, bytes) and address.startswith(b"\0leadrelay-wakeup-")
    assert address != wakeup_address(tmp_path / ("e" * 120) / "leadrelay.db")
    with Waiter(address) as waiter:
        assert waiter.listening
        notify_from_another_process(address)
        assert waiter.wait(30) is True


def test_the_dispatcher_delivers_on_enqueue_not_at_its_next_poll(tmp_path: Path, make_service) -> None:
    sim = ServedApp(
        create_leadsquared_simulator(LSQ_ACCESS_KEY, LSQ_SECRET_KEY, rate_limit=(None, 5))
    ).start()
    try:
        ids = requests.post(
            f"{sim.url}/_sim/leads", json=[{"EmailAddress": "a@example.com"}, {"EmailAddress": "b@example.com"}],
            timeout=10,
        ).json()["ids"]  # fmt: skip
        # A poll interval far longer than the waits below: only a wake-up delivers in time.
        raw = base_config(tmp_path, sim.url, dispatcher={"poll_interval_seconds": 600})
        raw["server"]["metrics_port"] = 0
        web = make_service(raw)  # web in-process; the dispatcher a real process
        dispatcher = Process(["dispatch"], write_config(tmp_path, raw), tmp_path / "dispatch.log")
        try:
            address = wakeup_address(raw["storage"]["path"])
            wait_until(lambda: os.path.exists(address), what="the dispatcher listening")
            for number, lead_id in enumerate(ids, start=1):
                event = {"lead": {"id": lead_id}, "changes": {"city": f"City {number}"}}
                assert post_generic(web.url, event, f"wake-{number}").status_code == 202
                wait_until(
                    lambda n=number: len(sim_calls(sim.url, "Lead.Update")) == n,
                    timeout=60,
                    what=f"call {number}",
                )
        finally:
            # SIGTERM wakes the loop too: it stops without waiting out the poll interval.
            code = dispatcher.stop(signal.SIGTERM, timeout=60)
        assert code == 0, dispatcher.output()[-3000:]
        assert not os.path.exists(address)
    finally:
        sim.stop()


def _known_lead(sim_url: str, email: str) -> str:
    """A lead the simulator knows; its id (events address it by id: one call, no look-up)."""
    answer = requests.post(f"{sim_url}/_sim/leads", json=[{"EmailAddress": email}], timeout=10)
    answer.raise_for_status()
    return str(answer.json()["ids"][0])


def test_a_command_accepted_as_a_tick_begins_is_due_in_that_tick(service, lsq_sim) -> None:
    lead_id = _known_lead(lsq_sim.url, "late@example.com")
    store = service.runtime.store
    dispatcher = service.dispatcher()
    real_drain = store.drain_inbox
    answers: list[int] = []

    def drain_after_a_concurrent_accept() -> int:
        if not answers:  # the tick's first move: a webhook is accepted just before it
            event = {"lead": {"id": lead_id}, "changes": {"city": "Leeds"}}
            answers.append(post_generic(service.url, event, "late-1").status_code)
        return real_drain()

    store.drain_inbox = drain_after_a_concurrent_accept
    try:
        # Due in this very tick: the clock is read after the move, not before it.
        assert dispatcher.tick() == 1
    finally:
        del store.drain_inbox
        dispatcher.shutdown()
    assert answers == [202]
    assert len(sim_calls(lsq_sim.url, "Lead.Update")) == 1


def test_a_tick_that_waited_on_the_disk_does_not_hold_back_the_next_wake_up(
    tmp_path: Path, make_service, lsq_sim
) -> None:
    lead_id = _known_lead(lsq_sim.url, "next@example.com")
    # A poll interval far longer than the waits below: only a prompt wake-up delivers in time.
    service = make_service(base_config(tmp_path, lsq_sim.url, dispatcher={"poll_interval_seconds": 600}))
    store = service.runtime.store
    real_polling = store.polling_deliveries
    stall, stalled = threading.Event(), threading.Event()

    def polling_after_a_disk_stall(now: float, limit: int) -> Any:
        if stall.is_set() and not stalled.is_set():
            time.sleep(0.6)  # the stall under test: a tick waiting, not computing
            stalled.set()
        return real_polling(now, limit)

    store.polling_deliveries = polling_after_a_disk_stall
    dispatcher = service.dispatcher()
    loop = threading.Thread(target=dispatcher.run)
    loop.start()
    try:
        wait_until(lambda: dispatcher.waiter.listening, what="the dispatcher listening")
        stall.set()
        dispatcher.waiter.wake()  # a tick that stalls, then finds nothing to start
        wait_until(stalled.is_set, what="the stalled tick")
        event = {"lead": {"id": lead_id}, "changes": {"city": "York"}}
        assert post_generic(service.url, event, "next-1").status_code == 202
        # Resting ten times the stalled tick's 0.6 s would take 6 s; its CPU time was a few ms.
        wait_until(lambda: len(sim_calls(lsq_sim.url, "Lead.Update")) == 1, timeout=3, what="the call")
    finally:
        dispatcher.stop()
        loop.join(30)
        del store.polling_deliveries
