"""Who may connect to ``/xiaozhi/v1/`` (docs/xiaozhi.md#authentication).

The check is on when ``[xiaozhi]`` sets any of ``tokens``, ``auth_key`` or
``allowed_devices``. A device on ``allowed_devices`` (its ``Device-Id``; colons, dashes and
case do not matter) passes without a token; any other needs ``Authorization: Bearer <token>``
(the firmware adds ``Bearer `` to a token without a space) holding one of ``tokens`` or a
token signed with ``auth_key``.

A signed token is the xiaozhi reference server's: ``<sig>.<ts>``, ``ts`` the Unix time it
was made, ``sig`` the URL-safe base64 (no padding) of HMAC-SHA256(``auth_key``,
``"<Client-Id>|<Device-Id>|<ts>"``); it holds for ``token_expire_s``. The OTA reply hands
one to each device that is not allow-listed, bound to the ids it sent.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from collections.abc import Callable

from echokit_fast.config import XiaozhiConfig

__all__ = ["Auth", "device_key", "sign"]


def device_key(device_id: str) -> str:
    """A Device-Id as the allow-list compares it: lower case, without ``:`` and ``-``."""
    return device_id.lower().replace(":", "").replace("-", "")


def sign(key: str, client_id: str, device_id: str, ts: int) -> str:
    """The signed token for these ids made at Unix time ``ts``."""
    content = f"{client_id}|{device_id}|{ts}".encode()
    digest = hmac.new(key.encode(), content, hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).decode().rstrip("=") + f".{ts}"


class Auth:
    """The ``[xiaozhi]`` auth settings: :meth:`allows` a connection, :meth:`token_for` the
    OTA reply."""

    def __init__(self, cfg: XiaozhiConfig, *, clock: Callable[[], float] = time.time) -> None:
        self._tokens = [t.encode() for t in cfg.tokens]
        self._key = cfg.auth_key
        self._expire = cfg.token_expire_s
        self._allowed = {device_key(d) for d in cfg.allowed_devices}
        self._clock = clock
        self.enabled = bool(self._tokens or self._key or self._allowed)

    def _now(self) -> int:
        return int(self._clock())

    def allows(self, device_id: str, client_id: str, authorization: str | None) -> bool:
        """Whether a connection with these headers may talk."""
        if not self.enabled or device_key(device_id) in self._allowed:
            return True
        if not authorization:
            return False
        token = authorization.strip()
        if token[:7].lower() == "bearer ":
            token = token[7:].strip()
        given = token.encode()
        if any(hmac.compare_digest(given, t) for t in self._tokens):
            return True
        return self._key is not None and self._signed(token, client_id, device_id)

    def _signed(self, token: str, client_id: str, device_id: str) -> bool:
        _, dot, ts_text = token.rpartition(".")
        if not dot or not (ts_text.isascii() and ts_text.isdigit()):
            return False
        ts = int(ts_text)
        if self._now() - ts > self._expire:
            return False
        assert self._key is not None
        expected = sign(self._key, client_id, device_id, ts)
        return hmac.compare_digest(token.encode(), expected.encode())

    def token_for(self, device_id: str, client_id: str) -> str:
        """The ``websocket.token`` of the OTA reply: a signed token when ``auth_key`` is set
        and the device is not allow-listed, else ``""`` (which also clears a stale token the
        board keeps from another server)."""
        if self._key is None or device_key(device_id) in self._allowed:
            return ""
        return sign(self._key, client_id, device_id, self._now())
