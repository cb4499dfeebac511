"""``/console/status``: what the server is doing -- its health, the in-process engines' load,
the devices it holds and the last turns with their per-stage times (the waterfall).

* ``GET /console/status`` -- the page (``static/status.html``, ``status.js``); it holds no
  data and is served to anyone.
* ``GET /console/api/status`` -- the data, one JSON object (:func:`snapshot`).
* ``GET /console/api/status/events`` -- the same, live, as Server-Sent Events: ``snapshot``
  (the whole object) first, then ``turn`` (one record, as each turn ends: its ``id:`` is the
  record's ``seq``) and ``status`` (the object without ``turns`` and ``stages``, when it
  changed; looked at every :data:`TICK_S`), a ``: ping`` comment after :data:`HEARTBEAT_S`
  of silence, and ``closing`` when the server begins its SIGTERM/SIGINT drain, which ends the
  stream: a feed never holds up the drain (then, and while the drain runs, the route answers
  503). A client that goes away ends its feed at once (Starlette watches for the
  disconnect).

Both API routes answer only whom :func:`~echokit_fast.devices.web.access.refusal` lets in
(401 or 403 otherwise). SSE rather than polling: one request per page instead of one a
second, each turn shown as it ends; SSE rather than a WebSocket: plain HTTP that proxies and
``curl -N`` handle, one way as the data flows. The page reads it with ``fetch`` (not
``EventSource``, which cannot send the ``Authorization`` header: the key would have to go in
the URL, into logs and history).

Every number is read from the live objects when asked (nothing is sampled or estimated): the
turn records of ``AppState.turns`` (:class:`~echokit_fast.conversation.trace.RecentTurns`:
devices' and the realtime endpoint's turns, no transcripts), the sessions of
``AppState.sessions``, the engines of the state that are loaded (TTS streams, Whisper's
queue, the in-process LLM's queue and its last answer), the readiness and the start-up LLM
probe.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from dataclasses import asdict
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import BaseRoute, Route
from starlette.staticfiles import StaticFiles

from echokit_fast import __version__
from echokit_fast.api.common import error_response
from echokit_fast.conversation.session import Session
from echokit_fast.conversation.trace import STAGES
from echokit_fast.devices.web.access import API_PREFIX, refusal
from echokit_fast.server.lifecycle import llm_models_url
from echokit_fast.server.state import AppState

__all__ = ["HEARTBEAT_S", "TICK_S", "routes", "snapshot", "status"]

#: seconds between two looks at the status of a live feed
TICK_S = 1.0
#: seconds of silence after which a live feed sends a ``: ping`` comment
HEARTBEAT_S = 15.0
#: how long a client waits before connecting again after the stream ends (SSE ``retry:``)
RETRY_MS = 3000


def _health(state: AppState, feeds: int) -> dict[str, Any]:
    if state.draining:
        phase = "draining"
    elif state.load_error is not None:
        phase = "failed"
    else:
        phase = "ready" if state.ready else "loading"
    error = state.load_error
    return {
        "version": __version__,
        "state": phase,
        "error": None if error is None else str(error) or type(error).__name__,
        "layout": state.config.layout,
        "status_feeds": feeds,
        # ``serve --workers``: which process answers (its devices and turns only)
        "worker": None
        if state.worker is None
        else {"index": state.worker.index, "count": state.worker.count},
    }


def _backends(state: AppState) -> dict[str, Any]:
    cfg = state.config
    out: dict[str, Any] = {}
    for kind in ("asr", "llm", "tts"):
        section = getattr(cfg, kind)
        if section is not None:
            model = getattr(section, "model", None) or None  # "" (none given) too
            out[kind] = {"platform": section.platform, "model": model}
    if cfg.gemini is not None:
        out["gemini"] = {"platform": "gemini", "model": cfg.gemini.model}
    if cfg.claude is not None:
        out["claude"] = {"platform": "claude", "model": None}
    if "llm" in out and llm_models_url(cfg) is not None:
        out["llm"]["reachable"] = state.llm_reachable  # at start-up
    return out


def _engines(state: AppState) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if state.tts is not None:
        slots = state.tts.admission
        out["tts"] = {
            "engine": state.tts.engine,
            "streams": slots.streams,
            "active": slots.active,
            "waiting": slots.waiting,
            "device_reserve": slots.reserve,
        }
    if state.asr is not None:
        out["asr"] = {
            "model": state.asr.model_id,
            "pending": state.asr.pending,
            "limit": state.asr.max_pending + 1,
        }
    if state.llm is not None:
        llm = state.llm
        last = llm.records[-1] if llm.records else None
        out["llm"] = {
            "model": llm.model_id,
            "pending": llm.pending,
            "max_queue": llm.max_queue,
            "last": None if last is None else _rounded(asdict(last), "started", "ended"),
        }
    return out


def _rounded(values: dict[str, Any], *drop: str) -> dict[str, Any]:
    return {
        k: round(v, 3) if isinstance(v, float) else v for k, v in values.items() if k not in drop
    }


def _device(s: Session) -> dict[str, Any]:
    conn = s.conn
    if conn is None:
        phase = "disconnected"
    elif s.responding:
        phase = "answering"
    else:
        phase = "listening" if s.utt is not None else "idle"
    return {
        "id": s.id,
        "connected": conn is not None,
        "front_end": getattr(conn, "front_end", None),
        "state": phase,
        "turns": s.turns,
        "since": round(s.since, 3),
    }


def status(state: AppState, feeds: int = 0) -> dict[str, Any]:
    """What changes while the server runs: its health, the backends it is configured with,
    the loaded engines' load, the sessions it holds (connected first) and the turns counted
    by outcome. ``feeds``: the live feeds open."""
    sessions = list(state.sessions.sessions.values()) if state.sessions is not None else []
    sessions.sort(key=lambda s: (s.conn is None, s.id))
    return {
        "server": _health(state, feeds),
        "backends": _backends(state),
        "engines": _engines(state),
        "devices": [_device(s) for s in sessions],
        "outcomes": dict(state.turns.outcomes),
    }


def snapshot(state: AppState, feeds: int = 0) -> dict[str, Any]:
    """:func:`status`, the stage names in their order and the last turn records."""
    return {"stages": list(STAGES), **status(state, feeds), "turns": list(state.turns.records)}


def _event(kind: str, data: Any, *, event_id: int | None = None) -> str:
    """One SSE message (JSON data on one line: ``json.dumps`` escapes every newline)."""
    head = f"id: {event_id}\n" if event_id is not None else ""
    return f"{head}event: {kind}\ndata: {json.dumps(data, ensure_ascii=False)}\n\n"


def routes(state: AppState, files: StaticFiles) -> list[BaseRoute]:
    """The page (from `files`, the console's static files) and its two API routes."""
    feeds = 0  # live feeds open

    async def page(request: Request) -> Response:
        return await files.get_response("status.html", request.scope)

    async def current(request: Request) -> Response:
        refused = refusal(request, state.config.server.keys)
        if refused is not None:
            return refused
        return JSONResponse(snapshot(state, feeds), headers={"cache-control": "no-store"})

    async def feed() -> AsyncIterator[str]:
        nonlocal feeds
        feeds += 1
        try:
            whole = snapshot(state, feeds)
            seq = state.turns.seq
            last = status(state, feeds)
            yield f"retry: {RETRY_MS}\n" + _event("snapshot", whole, event_id=seq)
            sent = time.monotonic()
            while not state.draining:
                if state.turns.seq == seq:
                    await state.turns.wait(TICK_S)
                if state.draining:
                    break
                out = []
                for record in state.turns.since(seq):
                    seq = record["seq"]
                    out.append(_event("turn", record, event_id=seq))
                now = status(state, feeds)
                if now != last:
                    last = now
                    out.append(_event("status", now))
                if not out and time.monotonic() - sent >= HEARTBEAT_S:
                    out.append(": ping\n\n")
                if out:
                    yield "".join(out)
                    sent = time.monotonic()
            yield _event("closing", {"reason": "The server is shutting down."})
        finally:
            feeds -= 1

    async def events(request: Request) -> Response:
        refused = refusal(request, state.config.server.keys)
        if refused is not None:
            return refused
        if state.draining:
            return error_response(503, "The server is shutting down.", code="server_shutting_down")
        return StreamingResponse(
            feed(),
            media_type="text/event-stream",
            # x-accel-buffering: a proxy (nginx) passes each event on at once
            headers={"cache-control": "no-store", "x-accel-buffering": "no"},
        )

    return [
        Route("/console/status", page, methods=["GET", "HEAD"]),
        Route(f"{API_PREFIX}/status", current, methods=["GET"]),
        Route(f"{API_PREFIX}/status/events", events, methods=["GET"]),
    ]
