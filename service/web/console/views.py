"""The console's pages and forms: sign-in, overview, events, event detail, dead letters with
replay (one, or by filter after a dry run), and provider pause/resume, on the console blueprint."""

from __future__ import annotations

import time
from typing import Any
from urllib.parse import urlencode

from flask import (
    Response,
    abort,
    make_response,
    redirect,
    render_template,
    request,
    url_for,
)

from service.domain.redact import redact_obj
from service.domain.state import EventFilter, ProviderControl
from service.web.console import auth, figures
from service.web.console.blueprint import configured_admin_token, console, current_runtime
from service.web.event_filters import EVENT_STATUSES, FILTER_FIELDS, parse_event_filter, whole_events

PAGE_SIZE = 50
PROGRESS_SCAN = 5000  # rows read to count a bulk replay's progress


def _store() -> Any:
    return current_runtime().store


def _page(template: str, status: int = 200, **context: Any) -> Response:
    """Render with every value passed through the redactor: nothing secret reaches a page."""
    session = getattr(request, "console_session", None)
    body = render_template(
        f"console/{template}",
        csrf_token=session["csrf"] if session else "",
        signed_in=session is not None,
        **redact_obj(context),
    )
    return make_response(body, status)


# ---- sign-in ----------------------------------------------------------------------------


def _safe_next(target: str | None) -> str:
    # Only a path inside the console: never an open redirect to another site.
    if target and target.startswith("/console/") and not target.startswith("//"):
        return target
    return url_for("console.overview")


@console.route("/login", methods=["GET", "POST"])
def login() -> Any:
    admin_token = configured_admin_token()
    if not admin_token:
        abort(403, "the console is off: set server.admin_token")
    error = None
    status = 200
    if request.method == "POST":
        if not auth.login_form_token_valid(admin_token, request.form.get("csrf_token", "")):
            abort(403, "missing or wrong CSRF token: reload the sign-in page")
        if auth.token_matches(admin_token, request.form.get("token", "")):
            response = redirect(_safe_next(request.form.get("next")))
            auth.start_session(response, admin_token)
            return response
        error, status = "That token is not the admin token.", 401
    response = make_response()
    form_token = auth.login_form_token(response, admin_token)
    response.set_data(
        render_template(
            "console/login.html",
            csrf_token=form_token,
            signed_in=False,
            error=error,
            next=_safe_next(request.values.get("next")),
        )
    )
    response.status_code = status
    return response


@console.post("/logout")
def logout() -> Any:
    response = redirect(url_for("console.login"))
    auth.end_session(response)
    return response


# ---- overview ---------------------------------------------------------------------------


@console.get("/")
def overview() -> Any:
    store = _store()
    now = time.time()
    data = store.overview(now)
    config = current_runtime().config
    providers = {name: data["providers"].get(name, {}) for name in config.providers}
    providers.update({name: stats for name, stats in data["providers"].items() if name not in providers})
    webhooks = figures.webhook_outcomes()
    sources = sorted(set(data["sources"]) | set(webhooks) | set(config.sources))
    limits = {name: (p.get("rate_limit") or {}) for name, p in config.providers.items()}
    return _page(
        "overview.html",
        providers=providers,
        sources={name: {**data["sources"].get(name, {}), **webhooks.get(name, {})} for name in sources},
        limits=limits,
        budgets={name: figures.budget_bars(p.get("rate_limit"), now) for name, p in providers.items()},
        budget_box={"width": figures.BUDGET_WIDTH, "height": figures.BUDGET_HEIGHT},
        delivered_chart=figures.bars(data["series"], "delivered"),
        failed_chart=figures.bars(data["series"], "failed"),
        box={"width": figures.CHART_WIDTH, "height": figures.CHART_HEIGHT},
    )


# ---- events -----------------------------------------------------------------------------


def _filter_or_400() -> tuple[EventFilter, dict[str, str]]:
    event_filter, errors = parse_event_filter(request.values)
    if errors:
        abort(400, "; ".join(f"{name}: {', '.join(problems)}" for name, problems in errors.items()))
    values = {name: request.values.get(name, "").strip() for name in FILTER_FIELDS}
    return event_filter, {name: value for name, value in values.items() if value}


def _after() -> int:
    try:
        return max(int(request.args.get("after", 0)), 0)
    except ValueError:
        abort(400, "after: must be an integer")


def _event_rows(template: str, forced_status: str | None = None) -> Response:
    event_filter, values = _filter_or_400()
    if forced_status:
        event_filter = EventFilter(**{**event_filter.__dict__, "status": forced_status})
    after = _after()
    rows, more = whole_events(
        _store().list_events(event_filter, limit=PAGE_SIZE + 1, after_seq=after), PAGE_SIZE
    )
    next_url = (
        url_for(request.endpoint or "console.events") + "?" + urlencode({**values, "after": rows[-1]["seq"]})
        if more and rows
        else None
    )
    return _page(
        template,
        rows=rows,
        values=values,
        statuses=EVENT_STATUSES,
        providers=sorted(current_runtime().config.providers),
        sources=sorted(current_runtime().config.sources),
        next_url=next_url,
        first_url=url_for(request.endpoint or "console.events") + "?" + urlencode(values) if after else None,
    )


@console.get("/events")
def events() -> Any:
    return _event_rows("events.html")


@console.get("/events/<path:command_id>")
def event(command_id: str) -> Any:
    found = _store().get_event(command_id)
    if found is None:
        abort(404, f"no event {command_id!r}")
    return _page("event.html", event=found, replayed=request.args.get("replayed"))


@console.post("/events/<path:command_id>/replay")
def replay_event(command_id: str) -> Any:
    runtime = current_runtime()
    found = runtime.store.get_event(command_id)
    if found is None:
        abort(404, f"no event {command_id!r}")
    routed = (
        runtime.config.route(found["source"], found["event_type"]) if found["status"] == "unrouted" else None
    )
    providers = runtime.store.replay(command_id, provider=request.form.get("provider") or None, routed=routed)
    target = url_for("console.event", command_id=command_id, replayed=",".join(providers) or "none")
    return redirect(target, code=303)


# ---- dead letters and bulk replay -------------------------------------------------------


@console.get("/dead-letters")
def dead_letters() -> Any:
    return _event_rows("dead_letters.html", forced_status="dead_lettered")


@console.post("/dead-letters/replay")
def replay_matching() -> Any:
    """Step 1 (`confirm` absent): a dry run and a confirmation form; step 2: the replay itself."""
    store = _store()
    event_filter, values = _filter_or_400()
    event_filter = EventFilter(**{**event_filter.__dict__, "status": "dead_lettered"})
    values.pop("status", None)
    if request.form.get("confirm") != "yes":
        counts = store.replay_matching(event_filter, dry_run=True)
        return _page("replay_confirm.html", counts=counts, values=values)
    counts = store.replay_matching(event_filter, dry_run=False)
    query = urlencode({**values, "events": counts["events"], "deliveries": counts["deliveries"]})
    return redirect(url_for("console.replay_progress") + "?" + query, code=303)


@console.get("/dead-letters/progress")
def replay_progress() -> Any:
    """How far a bulk replay got: the matching deliveries by status, refreshed until none is open."""
    event_filter, values = _filter_or_400()
    for name in ("events", "deliveries"):
        values.pop(name, None)
    counts = dict.fromkeys(EVENT_STATUSES, 0)
    for row in _store().list_events(event_filter, limit=PROGRESS_SCAN):
        counts[row["status"]] = counts.get(row["status"], 0) + 1
    open_count = counts["pending"] + counts["in_flight"] + counts["polling"]
    return _page(
        "progress.html",
        counts=counts,
        open_count=open_count,
        replayed={
            "events": request.args.get("events", "0"),
            "deliveries": request.args.get("deliveries", "0"),
        },
        values=values,
        events_url=url_for("console.events") + "?" + urlencode(values),
    )


# ---- providers ----------------------------------------------------------------------------


@console.get("/providers")
def providers() -> Any:
    store = _store()
    controls = store.provider_controls()
    stats = store.overview(time.time())["providers"]
    names = sorted(set(current_runtime().config.providers) | set(controls))
    rows = [
        {
            "name": name,
            "control": (controls.get(name) or ProviderControl(provider=name)).__dict__,
            "stats": stats.get(name, {}),
            "type": current_runtime().config.providers.get(name, {}).get("type", "?"),
        }
        for name in names
    ]
    return _page("providers.html", rows=rows, changed=request.args.get("changed"))


@console.post("/providers/<name>/<action>")
def control_provider(name: str, action: str) -> Any:
    if action not in ("pause", "resume"):
        abort(404, f"no action {action!r}: pause or resume")
    store = _store()
    if name not in current_runtime().config.providers:
        abort(404, f"no provider {name!r}")
    control = store.provider_controls().get(name) or ProviderControl(provider=name)
    control.paused = action == "pause"
    reason = (request.form.get("reason") or "").strip()[:200]
    if control.paused:
        control.reason = reason or "paused from the console"
    elif control.breaker == "closed":
        control.reason = None  # an open breaker keeps its own reason
    control.updated_at = time.time()
    store.put_provider_control(control)
    return redirect(url_for("console.providers", changed=f"{name} {action}d"), code=303)
