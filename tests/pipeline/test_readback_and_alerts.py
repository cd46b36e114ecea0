"""Crash recovery's read-back under rate limits, the shared breaker, and alert notifications."""

from __future__ import annotations

import base64
import json
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import requests
from flask import Flask, request
from standardwebhooks.webhooks import Webhook

from handlers.base import DeliveryResult, Outcome
from handlers.simulation import ServedApp
from service import metrics
from service.cli import main as cli_main
from service.domain.state import ProviderControl
from service.pipeline.alerts import Alerts
from service.pipeline.breaker import BreakerSettings, paused
from service.pipeline.embedded import EmbeddedDispatcher
from service.pipeline.gate import ProviderGate
from service.state import SqlStateStore, migrate
from service.state.engine import SQLiteEngine
from tests.pipeline.test_delivery import event_of, fault, seed
from tests.support import ThreadedDispatcher, base_config, post_generic, sim_calls, wait_until, write_config

ALERT_SECRET = "whsec_" + base64.b64encode(b"alert-signing-secret-0123456789").decode()


@pytest.mark.slow
def test_a_rate_limited_read_back_waits_and_asks_again_instead_of_resending(
    make_service: Any, lsq_sim: ServedApp, tmp_path: Path
) -> None:
    service = make_service(base_config(tmp_path, lsq_sim.url))
    seed(lsq_sim, {"EmailAddress": "jane@example.com", "mx_City": "London"})  # the call had landed
    post_generic(service.url, {"lead": {"email": "jane@example.com"}, "changes": {"city": "London"}}, "m1")
    store = service.runtime.store
    assert len(store.claim_due_groups(time.time(), 10)) == 1  # in flight when "the process died"
    fault(lsq_sim, "Leads.GetById", 429, count=1, headers={"Retry-After": "1"})

    dispatcher = EmbeddedDispatcher(service.config, store, service.core)
    later = dispatcher.recover()  # the e-mail look-up takes this round's slot
    assert len(later) == 1
    later = dispatcher.recover(later)  # the read-back: 429
    assert len(later) == 1 and event_of(service, "generic:m1")["deliveries"][0]["status"] == "in_flight"
    waiting = {"groups": later}

    def asked_again() -> bool:  # the limiter's pause for the 429 must pass first
        waiting["groups"] = dispatcher.recover(waiting["groups"])
        return not waiting["groups"]

    wait_until(asked_again, timeout=10)

    delivery = event_of(service, "generic:m1")["deliveries"][0]
    assert delivery["status"] == "delivered" and "confirmed applied" in delivery["last_error"]
    assert sim_calls(lsq_sim.url, "Lead.Update") == []  # never resent
    assert [c["status"] for c in sim_calls(lsq_sim.url, "Leads.GetById")] == [429, 200]
    assert len(sim_calls(lsq_sim.url, "GetByEmailaddress")) == 1


def shared_store(path: Path) -> SqlStateStore:
    engine = SQLiteEngine(path)
    migrate(engine)
    return SqlStateStore(engine)


def test_two_dispatchers_share_one_breaker_through_the_store(tmp_path: Path) -> None:
    store = shared_store(tmp_path / "state.db")
    settings = BreakerSettings(probe_initial_seconds=0.3)
    first = ProviderGate(settings, {"lsq": "fp"}, refresh_seconds=0.0)
    second = ProviderGate(settings, {"lsq": "fp"}, refresh_seconds=0.0)
    first.attach(store)
    second.attach(store)
    failure = DeliveryResult(Outcome.TRANSIENT, reason="HTTP 500", status_code=500)
    for _ in range(10):
        assert first.admit("lsq").go
        first.observe("lsq", failure, probe=False)
    assert store.provider_controls()["lsq"].breaker == "open"
    held = second.admit("lsq")
    assert not held.go and held.reason.startswith("circuit open")  # the other dispatcher holds too

    probe = wait_until(lambda: (a := second.admit("lsq")).go and a, timeout=5)  # at the probe time
    assert probe.probe
    assert not first.admit("lsq").go  # half open: one probe at a time, across dispatchers
    second.observe("lsq", DeliveryResult(Outcome.DELIVERED, status_code=200), probe=True)
    assert store.provider_controls()["lsq"].breaker == "closed"
    assert first.admit("lsq").go


def test_alerts_are_signed_slack_compatible_notifications() -> None:
    received: list[dict[str, Any]] = []
    lock = threading.Lock()
    app = Flask("alert-receiver")

    @app.post("/hook")
    def hook() -> Any:
        body = request.get_data(as_text=True)
        payload = Webhook(ALERT_SECRET).verify(body, dict(request.headers))  # raises if forged
        with lock:
            received.append(payload)
        return {"ok": True}

    receiver = ServedApp(app).start()
    try:
        alerts = Alerts(
            {"webhook_url": receiver.url + "/hook", "signing_secret": ALERT_SECRET, "timeout_seconds": 2}
        )
        gate = ProviderGate(BreakerSettings(min_calls=2), {"lsq": "fp"}, alerts)
        for _ in range(2):
            gate.admit("lsq")
            gate.observe(
                "lsq", DeliveryResult(Outcome.TRANSIENT, reason="HTTP 503", status_code=503), probe=False
            )
        alerts.dead_lettered("lsq", "HTTP 400")
        alerts.dead_lettered("lsq", "HTTP 400")  # only the first is news
        alerts.backlog(5000.0)
        assert alerts.wait_sent()
    finally:
        receiver.stop()
    kinds = [r["kind"] for r in received]
    assert kinds == ["breaker_opened", "first_dead_letter", "backlog_old"]
    assert (
        received[0]["text"].startswith("leadrelay: circuit opened for lsq")
        and received[0]["provider"] == "lsq"
    )


@pytest.mark.slow
def test_cli_admin_readyz_and_metrics_show_and_control_the_breaker(
    make_service: Any, lsq_sim: ServedApp, tmp_path: Path, capsys: Any
) -> None:
    raw = base_config(tmp_path, lsq_sim.url)
    service = make_service(raw)
    config_path = str(write_config(tmp_path, raw))
    cli = ["--config", config_path, "providers"]
    target = ["--url", service.url]

    assert cli_main([*cli, "pause", "leadsquared", *target]) == 0
    assert json.loads(capsys.readouterr().out)["paused"] is True
    assert cli_main([*cli, "status", *target]) == 0
    assert capsys.readouterr().out.split("\t")[:2] == ["leadsquared", "paused"]
    ready = requests.get(service.url + "/readyz", timeout=5).json()
    assert ready["breakers"]["leadsquared"]["paused"] is True and ready["status"] == "ready"

    # The paused provider's delivery waits, visibly, and goes once resumed.
    with ThreadedDispatcher(EmbeddedDispatcher(service.config, service.runtime.store, service.core)):
        [lead_id] = seed(lsq_sim, {"EmailAddress": "ann@example.com"})
        post_generic(service.url, {"lead": {"id": lead_id}, "changes": {"city": "Oslo"}}, "p1")
        wait_until(
            lambda: event_of(service, "generic:p1")["deliveries"][0]["error_stage"] == "breaker", timeout=10
        )
        assert sim_calls(lsq_sim.url, "Lead.Update") == []
        assert 'leadrelay_breaker_state{provider="leadsquared"} 3.0' in metrics.render()[0].decode()
        assert cli_main([*cli, "resume", "leadsquared", *target]) == 0
        assert json.loads(capsys.readouterr().out)["breaker"] == "closed"
        wait_until(lambda: event_of(service, "generic:p1")["status"] == "delivered", timeout=20)
    with pytest.raises(SystemExit) as exited:  # a clear 404 from the API
        cli_main([*cli, "pause", "nobody", *target])
    assert exited.value.code == 1
    assert "NOT_FOUND" in capsys.readouterr().err


def test_a_breaker_transition_never_overwrites_an_operator_pause(tmp_path: Path) -> None:
    store = shared_store(tmp_path / "state.db")
    gate = ProviderGate(BreakerSettings(min_calls=2), {"lsq": "fp"}, refresh_seconds=3600.0)
    gate.attach(store)
    assert gate.admit("lsq").go  # read the (empty) controls; the next read is an hour away
    store.put_provider_control(paused(ProviderControl("lsq"), time.time()))  # the web process
    failure = DeliveryResult(Outcome.TRANSIENT, reason="HTTP 500", status_code=500)
    gate.observe("lsq", failure, probe=False)
    gate.observe("lsq", failure, probe=False)  # opens: written with the operator's pause kept
    written = store.provider_controls()["lsq"]
    assert written.breaker == "open" and written.paused is True
    assert gate.admit("lsq").reason == "paused by an operator"
