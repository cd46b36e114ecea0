"""The image's processes, for real: gunicorn started with the Dockerfile's exact CMD (two
workers, multiprocess metrics) and `leadrelay dispatch` on its own metrics port, configured
the way the chart configures them (a config file without secrets, secrets as env vars),
against the LeadSquared simulator with faults injected. One run, several checks on it:
probes, /metrics moving, JSON access log without probes, no secret in any log line."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.deploy.conftest import SECRETS, Stack, scrape, start_stack, stop_stack
from tests.support import ADMIN_TOKEN, SIGNING_SECRET, post_generic, wait_until

LEAD_UPDATE = "Lead.Update"
DOWN = "leadsquared_down"
ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


def event_status(stack: Stack, command_id: str) -> str:
    response = requests.get(f"{stack.web_url}/v1/events/{command_id}", headers=ADMIN, timeout=5)
    return response.json().get("status", "") if response.status_code == 200 else ""


def wait_status(stack: Stack, command_id: str, status: str) -> None:
    wait_until(lambda: event_status(stack, command_id) == status, timeout=20, what=f"{command_id} {status}")


def fault(stack: Stack, status: int, body: dict[str, Any] | None = None) -> None:
    """The simulator answers the next Lead.Update with `status` (its default body if None)."""
    spec: dict[str, Any] = {"path": LEAD_UPDATE, "status": status, "count": 1}
    if body is not None:
        spec["body"] = body
    requests.post(f"{stack.sim.url}/_sim/faults", json=spec, timeout=5).raise_for_status()


def send(stack: Stack, email: str, request_id: str | None = None, **kwargs: Any) -> requests.Response:
    event = {"event_type": "form.submitted", "lead": {"email": email}, "changes": {"city": "London"}}
    if request_id is None:
        return post_generic(stack.web_url, event, f"msg_{uuid.uuid4().hex[:12]}", **kwargs)
    # post_generic has no header hook: sign and send by hand to set X-Request-Id.
    from tests.support import signed_headers

    body = json.dumps(event).encode()
    headers = {**signed_headers(body, f"msg_{uuid.uuid4().hex[:12]}", **kwargs), "X-Request-Id": request_id}
    return requests.post(f"{stack.web_url}/webhooks/generic", data=body, headers=headers, timeout=10)


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    stack = start_stack(
        tmp_path_factory.mktemp("stack"), rate_limit={"calls": 3, "per_seconds": 2}, unreachable_provider=DOWN
    )
    try:
        stack.extra["web_before"] = scrape(stack.web_url + "/metrics")
        stack.extra["dispatcher_before"] = scrape(stack.metrics_url + "/metrics")
        emails = [f"lead{i}@example.com" for i in range(8)]
        requests.post(f"{stack.sim.url}/_sim/leads", json=[{"EmailAddress": e} for e in emails], timeout=5)

        # Plain deliveries over fresh connections, so both gunicorn workers take some.
        delivered = []
        for i, email in enumerate(emails[:4]):
            answer = send(stack, email, request_id=f"req-deploy-{i}")
            assert answer.status_code == 202, answer.text
            assert answer.headers["X-Request-Id"] == f"req-deploy-{i}"
            delivered.append(answer.json()["command_id"])
        for command_id in delivered:
            wait_status(stack, command_id, "delivered")

        # A 500 then success: one transient retry. A 429: rescheduled without using the budget.
        fault(stack, 500)
        retried = send(stack, emails[4]).json()["command_id"]
        wait_status(stack, retried, "delivered")
        fault(stack, 429)
        limited = send(stack, emails[5]).json()["command_id"]
        wait_status(stack, limited, "delivered")

        # A 400: permanent, dead-lettered; then replayed through the admin API and delivered.
        fault(
            stack,
            400,
            {"Status": "Error", "ExceptionType": "MXInvalidInputException", "ExceptionMessage": "bad"},
        )
        dead = send(stack, emails[6]).json()["command_id"]
        wait_status(stack, dead, "dead_lettered")
        replay = requests.post(f"{stack.web_url}/v1/events/{dead}/replay", headers=ADMIN, timeout=5)
        assert replay.status_code == 202, replay.text
        wait_status(stack, dead, "delivered")

        # A provider that cannot be reached: retried, then dead-lettered with the reason.
        event = {"event_type": "deal.updated", "lead": {"email": emails[0]}, "changes": {"status": "won"}}
        unreachable = post_generic(stack.web_url, event, f"msg_{uuid.uuid4().hex[:12]}").json()["command_id"]
        wait_status(stack, unreachable, "dead_lettered")

        # Senders and callers that get it wrong.
        wrong = send(stack, emails[7], secret="whsec_" + "d3Jvbmctc2VjcmV0LXdyb25nLXNlY3JldA==")
        assert wrong.status_code == 401
        assert (
            requests.get(
                f"{stack.web_url}/v1/events", headers={"Authorization": "Bearer nope"}, timeout=5
            ).status_code
            == 401
        )
        assert requests.post(f"{stack.web_url}/webhooks/nosuch", data=b"{}", timeout=5).status_code == 404
        too_big = b'{"pad": "' + b"x" * 300_000 + b'"}'
        assert requests.post(f"{stack.web_url}/webhooks/generic", data=too_big, timeout=5).status_code == 413

        # Probes, as the kubelet sends them.
        for _ in range(3):
            assert requests.get(stack.web_url + "/healthz", timeout=5).status_code == 200
            assert requests.get(stack.web_url + "/readyz", timeout=5).status_code == 200
            assert requests.get(stack.metrics_url + "/healthz", timeout=5).status_code == 200
            assert requests.get(stack.metrics_url + "/readyz", timeout=5).status_code == 200
        stack.extra.update(
            delivered=delivered, retried=retried, limited=limited, dead=dead, unreachable=unreachable
        )
        stack.extra["web_after"] = scrape(stack.web_url + "/metrics")
        time.sleep(5.2)  # the dispatcher refreshes its queue gauges every 5 s
        stack.extra["dispatcher_after"] = scrape(stack.metrics_url + "/metrics")
        yield stack
    finally:
        stop_stack(stack)
        stack.extra["exit_codes"] = (stack.web.proc.returncode, stack.dispatcher.proc.returncode)


def value(samples: dict[str, float], name: str, **labels: str) -> float:
    key = name + "{" + ",".join(f'{k}="{v}"' for k, v in sorted(labels.items())) + "}"
    return samples.get(key, 0.0)


# ---- /metrics -----------------------------------------------------------------------------


def test_web_metrics_count_every_webhook_across_gunicorn_workers(run: Stack) -> None:
    before, after = run.extra["web_before"], run.extra["web_after"]
    name = "leadrelay_webhooks_received_total"
    accepted = value(after, name, source="generic", outcome="accepted") - value(
        before, name, source="generic", outcome="accepted"
    )
    # 4 + retried + limited + dead + unreachable = 8 accepted, however gunicorn spread them.
    assert accepted == 8
    assert value(before, name, source="generic", outcome="accepted") == 0  # nothing stale summed in
    assert value(after, name, source="generic", outcome="unauthorized") == 1
    assert value(after, name, source="unknown", outcome="unknown_source") == 1
    assert value(after, name, source="generic", outcome="payload_too_large") == 1
    assert value(after, "leadrelay_commands_queued_total", source="generic") == 8
    # Several worker processes wrote samples and /metrics summed them; the stale file a
    # previous container left behind (1000 accepted) was wiped at start, not summed in.
    assert len(list(run.prometheus_dir.glob("counter_*.db"))) >= 2
    assert not (run.prometheus_dir / "counter_999999.db").exists()


def test_dispatcher_metrics_move_after_deliveries(run: Stack) -> None:
    before, after = run.extra["dispatcher_before"], run.extra["dispatcher_after"]

    def moved(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    lsq = {"provider": "leadsquared"}
    assert (
        moved("leadrelay_deliveries_total", outcome="delivered", **lsq) == 7
    )  # 6 + the replayed dead letter
    assert moved("leadrelay_deliveries_total", outcome="dead_lettered", **lsq) == 1
    assert moved("leadrelay_dead_letters_total", stage="provider", **lsq) == 1
    assert moved("leadrelay_retries_total", reason="transient", **lsq) == 1
    assert moved("leadrelay_retries_total", reason="rate_limited", **lsq) == 1
    assert moved("leadrelay_delivery_latency_seconds_count", **lsq) == 7
    assert moved("leadrelay_delivery_latency_seconds_sum", **lsq) > 0
    assert moved("leadrelay_delivery_latency_seconds_bucket", le="+Inf", **lsq) == 7
    assert moved("leadrelay_provider_calls_total", outcome="delivered", **lsq) == 7
    assert moved("leadrelay_provider_call_seconds_count", **lsq) == 10  # 7 + 500 + 429 + 400
    down = {"provider": DOWN}
    assert moved("leadrelay_deliveries_total", outcome="dead_lettered", **down) == 1
    assert moved("leadrelay_retries_total", reason="transient", **down) == 4  # max_attempts 5
    assert moved("leadrelay_dead_letters_total", stage="lookup", **down) == 1
    assert value(after, "leadrelay_queue_depth") == 0
    assert value(after, "leadrelay_oldest_pending_age_seconds") == 0
    # The limit is 3 calls per 2 s in this run: the first burst of 4 had to wait.
    assert moved("leadrelay_rate_limit_waits_total", **lsq) >= 1


def test_nothing_is_written_to_home(run: Stack) -> None:
    """The image has no writable HOME (read-only root filesystem, HOME=/nonexistent)."""
    assert list(run.home.rglob("*")) == []


def test_worker_port_answers_probes_and_nothing_else(run: Stack) -> None:
    health = requests.get(run.metrics_url + "/healthz", timeout=5)
    assert health.status_code == 200 and health.json()["status"] == "ok"
    assert health.json()["loop_age_seconds"] < 5  # the dispatcher loop heartbeats
    assert requests.get(run.metrics_url + "/readyz", timeout=5).json()["status"] == "ready"
    assert requests.get(run.metrics_url + "/nope", timeout=5).status_code == 404


# ---- logs ---------------------------------------------------------------------------------


def parsed(lines: list[str]) -> list[dict[str, Any]]:
    out = []
    for line in lines:
        try:
            out.append(json.loads(line))
        except ValueError:
            pytest.fail(f"not a JSON log line: {line[:300]}")
    return out


def test_every_log_line_is_json(run: Stack) -> None:
    assert parsed(run.web.lines()) and parsed(run.dispatcher.lines())


def test_access_log_is_json_with_request_ids_and_without_probes(run: Stack) -> None:
    access = [e for e in parsed(run.web.lines()) if e.get("logger") == "gunicorn.access"]
    paths = [e["path"] for e in access]
    assert "/webhooks/generic" in paths and "/webhooks/nosuch" in paths
    assert not {"/healthz", "/readyz"} & set(paths), "successful probes must not reach the access log"
    ours = {e["request_id"]: e for e in access if e.get("request_id", "").startswith("req-deploy-")}
    assert set(ours) == {f"req-deploy-{i}" for i in range(4)}
    for entry in ours.values():
        assert entry["method"] == "POST" and entry["status"] == 202 and isinstance(entry["duration_ms"], int)
    # The app echoes a request id it made up when the sender sent none; the log has it too.
    assert all(e.get("request_id") for e in access if e["path"].startswith("/webhooks/"))


def test_app_lines_carry_request_or_command_ids(run: Stack) -> None:
    web = [e for e in parsed(run.web.lines()) if e["logger"].startswith("leadrelay.")]
    request_scoped = [e for e in web if e["logger"] in ("leadrelay.webhooks", "leadrelay.ingest")]
    assert request_scoped and all(e.get("request_id") for e in request_scoped)
    # A webhook that queued one command: its access-log line ties the request to the command.
    access = [e for e in parsed(run.web.lines()) if e["logger"] == "gunicorn.access"]
    assert any(e.get("request_id") == "req-deploy-0" and e.get("command_id") for e in access)
    dispatcher = [
        e
        for e in parsed(run.dispatcher.lines())
        if e["message"] in ("delivered", "dead-lettered", "rescheduled")
    ]
    assert {e["message"] for e in dispatcher} == {"delivered", "dead-lettered", "rescheduled"}
    assert all(e.get("command_id") for e in dispatcher)
    assert {run.extra["dead"], run.extra["retried"]} <= {e["command_id"] for e in dispatcher}


def test_no_log_line_contains_a_configured_secret(run: Stack) -> None:
    lines = run.web.lines() + run.dispatcher.lines()
    assert len(lines) > 20
    for secret in [*SECRETS.values(), SIGNING_SECRET.removeprefix("whsec_")]:
        leaked = [line for line in lines if secret in line]
        assert not leaked, f"secret in logs: {leaked[:2]}"
    # The unreachable provider's reasons (connection errors quote the URL with its query
    # string) made it to the log, redacted rather than dropped.
    records = [json.loads(line) for line in run.dispatcher.lines() if run.extra["unreachable"] in line]
    reasons = [r.get("reason", "") for r in records if "alert" not in r]
    assert len([r for r in reasons if r]) == 5 and any("accessKey=***" in r for r in reasons), reasons
    # Its first dead letter was also an alert, with the same redacted reason.
    alerts = [r for r in records if r.get("alert") == "first_dead_letter"]
    assert len(alerts) == 1 and "accessKey=***" in alerts[0]["reason"], alerts


def test_processes_stop_cleanly_on_sigterm(run: Stack, tmp_path: Path) -> None:
    """Runs last in this module: the fixture has not stopped them yet, so stop one here."""
    code = run.dispatcher.stop()
    assert code == 0, run.dispatcher.lines()[-5:]
    assert any(json.loads(line)["message"] == "dispatcher stopped" for line in run.dispatcher.lines())
    started = time.monotonic()
    assert run.web.stop() == 0, run.web.lines()[-5:]
    assert time.monotonic() - started < 10  # idle workers do not wait out the graceful timeout
    assert json.loads(run.web.lines()[-1])["message"] == "Shutting down: Master"
    assert list(run.prometheus_dir.glob("*.db"))  # files stay for the pod's lifetime, wiped on start
