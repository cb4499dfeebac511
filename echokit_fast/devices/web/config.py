"""``/console/config``: the running config, checked as ``check-config`` checks it, and saved
and applied without a restart when the server allows it.

* ``GET /console/config`` -- the page (``static/config.html``, ``config.js``); it holds no
  data and is served to anyone.
* ``GET /console/api/config`` -- ``{"path", "source", "text", "writable", "write_refusal",
  "platforms"}``: the TOML text of the file ``serve`` was started with, read now (``path``
  null and ``source`` ``"embedded default"`` when it runs without a file: then the text is the
  default config written as TOML, :func:`~echokit_fast.config_toml.to_toml`, and it cannot be
  saved), whether a save would be taken and why not, and every registered platform of
  ``[asr]``, ``[tts]`` and ``[llm]`` (``name``, ``aliases``, ``runnable``).
* ``POST /console/api/config/check`` -- the body is TOML text; the answer is
  :meth:`~echokit_fast.config_check.Check.as_json` (``ok``, ``errors``, ``warnings``,
  ``notes``, each with ``line`` and ``key`` where known): the check of ``check-config``,
  ``${VAR}`` expanded from the server's environment (whose values the messages do not
  show: :func:`_hide_env`).
* ``PUT /console/api/config`` -- the body is the new TOML text. Taken only when ``serve``
  was started with a config file and ``--config-write`` (``$ECHOKIT_CONFIG_WRITE=1``) *and*
  an API key is set and the request carries it; otherwise 403 saying which is missing (with
  no key set the console is open to this machine, and this machine's other users or its
  browsers' pages must not rewrite the server's config). The text is checked first (422 with
  the check's answer and nothing written when it fails), then written atomically (a temporary
  file in the same folder, renamed over the file) with the previous file kept as
  ``<name>.bak``, then applied (:func:`echokit_fast.server.reload.apply`: the devices stay
  connected, the parts that need a restart are listed). A save that comes while the server
  loads its engines waits for them.

All three API routes answer only whom :func:`~echokit_fast.devices.web.access.refusal` lets
in (401 or 403 otherwise); a body over :data:`MAX_CONFIG_BYTES` is answered 413, one that is
not UTF-8 is a check error at its line.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route
from starlette.staticfiles import StaticFiles

from echokit_fast.api.common import error_body, error_response
from echokit_fast.backends import registry
from echokit_fast.config import ConfigError, decode_config, load_config
from echokit_fast.config_check import Check, check_text
from echokit_fast.config_toml import to_toml
from echokit_fast.devices.web.access import API_PREFIX, refusal
from echokit_fast.server import reload
from echokit_fast.server.state import AppState

__all__ = ["MAX_CONFIG_BYTES", "routes", "write_refusal"]

#: the largest config text the API reads (a config file is a few KiB)
MAX_CONFIG_BYTES = 256 * 1024

NO_STORE = {"cache-control": "no-store"}

log = logging.getLogger(__name__)


def write_refusal(state: AppState) -> str | None:
    """Why this server takes no save (None: it takes one with an API key)."""
    if state.config_path is None:
        return (
            "The server runs on the embedded default, not a config file: start it with "
            "--config FILE --config-write to save from here."
        )
    if not state.config_write:
        return (
            "The server was started without --config-write (or ECHOKIT_CONFIG_WRITE=1): "
            "the config can be checked here but not saved."
        )
    if not state.config.server.keys:
        return (
            "Saving needs an API key: set [server] api_key (or serve --api-key) and send it; "
            "without one the server takes no config from the network."
        )
    return None


def _platforms() -> dict[str, list[dict[str, Any]]]:
    return {
        kind: [
            {"name": p.name, "aliases": list(p.spellings[1:]), "runnable": p.runnable}
            for p in registry.platforms(kind)
        ]
        for kind in registry.KINDS
    }


def _read(state: AppState) -> dict[str, Any]:
    path = state.config_path
    if path is None:
        return {"path": None, "source": "embedded default", "text": to_toml(state.config)}
    try:
        text: str | None = decode_config(path.read_bytes(), filename=str(path))
        error = None
    except OSError as exc:
        text, error = None, f"cannot read {path}: {exc.strerror}"
    except ConfigError as exc:
        text, error = None, str(exc)
    return {"path": str(path), "source": "file", "text": text, "error": error}


async def _body(request: Request) -> bytes | Response:
    """The request's body, or the 413 answer for one over :data:`MAX_CONFIG_BYTES`."""
    too_large = error_response(
        413,
        f"The config text is over {MAX_CONFIG_BYTES} bytes.",
        code="config_too_large",
    )
    length = request.headers.get("content-length", "")
    if length.isdigit() and int(length) > MAX_CONFIG_BYTES:
        return too_large
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_CONFIG_BYTES:
            return too_large
        chunks.append(chunk)
    return b"".join(chunks)


def _check(state: AppState, data: bytes) -> tuple[Check, dict[str, Any]]:
    """The check of the config text ``data`` and its answer (:func:`_hide_env`)."""
    path = state.config_path
    name = path.name if path is not None else "config.toml"
    try:
        text = decode_config(data, filename=name)
    except ConfigError as exc:
        check = Check(name, errors=list(exc.issues))
        return check, check.as_json()
    base = path.resolve().parent if path is not None else None
    check = check_text(text, filename=name, base_dir=base)
    return check, _hide_env(check.as_json(), text, os.environ)


_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)")
#: the shortest start of a value hidden when a message cut the value short
_CUT = 20


def _hide_env(answer: dict[str, Any], text: str, env: Mapping[str, str]) -> dict[str, Any]:
    """`answer` with the value of each environment variable that `text` names written as
    ``${NAME}`` in the messages (also its start, when a message cut a long value short): a
    message may quote a value (``expected HOST:PORT, got '...'``), and the console shows
    what is wrong with a config, not the server's environment."""
    found = {n: env[n] for n in set(_VAR.findall(text)) if env.get(n)}
    values = sorted(found.items(), key=lambda item: -len(item[1]))

    def hide(message: str) -> str:
        for name, value in values:
            for end in range(len(value), min(len(value), _CUT) - 1, -1):
                if value[:end] in message:
                    message = message.replace(value[:end], f"${{{name}}}")
                    break
        return message

    for kind in ("errors", "warnings", "notes"):
        for issue in answer[kind]:
            issue["message"] = hide(issue["message"])
    return answer


def _write(path: Path, data: bytes) -> Path | None:
    """``data`` in place of the file at ``path`` in one rename; the old file kept as
    ``<name>.bak`` (returned; None when there was none)."""
    target = path.resolve()  # a symbolic link keeps pointing at the file it names
    backup = None
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        if target.exists():
            shutil.copymode(target, tmp)
            backup = target.with_name(target.name + ".bak")
            shutil.copy2(target, backup)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return backup


def routes(state: AppState, files: StaticFiles) -> list[BaseRoute]:
    """The page (from `files`, the console's static files) and its three API routes."""
    saving = asyncio.Lock()  # one save at a time: written and applied in order

    async def page(request: Request) -> Response:
        return await files.get_response("config.html", request.scope)

    async def current(request: Request) -> Response:
        refused = refusal(request, state.config.server.keys)
        if refused is not None:
            return refused
        why = write_refusal(state)
        body = {
            **_read(state),
            "writable": why is None,
            "write_refusal": why,
            "platforms": _platforms(),
        }
        return JSONResponse(body, headers=NO_STORE)

    async def check(request: Request) -> Response:
        refused = refusal(request, state.config.server.keys)
        if refused is not None:
            return refused
        data = await _body(request)
        if isinstance(data, Response):
            return data
        _, answer = await asyncio.to_thread(_check, state, data)
        return JSONResponse(answer, headers=NO_STORE)

    async def save(request: Request) -> Response:
        refused = refusal(request, state.config.server.keys)
        if refused is not None:
            return refused
        why = write_refusal(state)
        if why is not None:
            return error_response(403, why, code="config_read_only")
        path = state.config_path
        assert path is not None
        data = await _body(request)
        if isinstance(data, Response):
            return data
        result, answer = await asyncio.to_thread(_check, state, data)
        if not result.ok or result.loaded is None:
            message = "The config has errors: nothing was saved."
            body = {**error_body(422, message, code="config_invalid"), **answer}
            return JSONResponse(body, status_code=422, headers=NO_STORE)
        await state.wait_ready()  # (the engines load at start-up: the running config first)
        if state.load_error is not None:
            return error_response(
                503,
                "The server could not load its engines: it takes no config.",
                code="server_failed",
            )
        async with saving:
            try:
                before = load_config(path, log_issues=False).config
            except ConfigError:  # edited by hand into something broken: compare with the running
                before = state.config
            try:
                backup = await asyncio.to_thread(_write, path, data)
            except OSError as exc:
                return error_response(
                    500, f"Cannot write {path}: {exc.strerror or exc}", code="config_write_failed"
                )
            try:
                done = await reload.apply(state, result.loaded.config, before)
            except Exception as exc:  # a backend that cannot be built (a missing engine ...)
                log.exception("applying the saved config failed")
                message = (
                    f"Saved to {path}, but it could not be applied ({exc}): the server runs the "
                    "previous config until it restarts."
                )
                return error_response(500, message, code="config_apply_failed")
        body = {
            "saved": True,
            "path": str(path),
            "backup": None if backup is None else str(backup),
            "applied": done.applied,
            "needs_restart": done.needs_restart,
            **answer,
        }
        return JSONResponse(body, headers=NO_STORE)

    return [
        Route("/console/config", page, methods=["GET", "HEAD"]),
        Route(f"{API_PREFIX}/config", current, methods=["GET"]),
        Route(f"{API_PREFIX}/config", save, methods=["PUT"]),
        Route(f"{API_PREFIX}/config/check", check, methods=["POST"]),
    ]
