"""The WebSocket protocol `echokit-fast serve` runs under uvicorn: uvicorn's sans-I/O one
(``ws="websockets-sansio"``, over websockets' ``ServerProtocol``) with two changes.

* **Abort.** Its ``send`` waits while the transport's write buffer is over the high-water
  mark (64 KiB), so what a peer does not read never piles up in the process; but a peer that
  stops reading then blocks ``send`` for good, and ``transport.close()`` (uvicorn's close,
  its keepalive timeout, the end of the app) waits for a buffer that never drains. The scope
  of every connection carries the extension :data:`ABORT` (``{"abort": callable}``): the app
  calls it (:func:`abort`) to drop the TCP connection at once: a reset (``SO_LINGER`` 0), so
  the unsent bytes are discarded by the kernel too and the peer learns it at once.
* **Invalid UTF-8.** A text message that is not UTF-8 closes the connection with 1007 as
  uvicorn does, logged as one WARNING line (uvicorn logs it with a traceback).
"""

from __future__ import annotations

import contextlib
import socket
import struct
from typing import Any

from uvicorn.protocols.utils import get_client_addr, get_path_with_query_string
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from websockets.protocol import State

__all__ = ["ABORT", "WebSocketProtocol", "abort"]

#: the scope extension naming the connection's abort callable
ABORT = "echokit_fast.abort"


class WebSocketProtocol(WebSocketsSansIOProtocol):
    """``uvicorn.Config(ws=WebSocketProtocol)``: see the module docstring."""

    async def run_asgi(self) -> None:
        self.scope["extensions"][ABORT] = {"abort": self.abort}
        await super().run_asgi()

    def abort(self) -> None:
        sock = self.transport.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.transport.abort()

    def send_receive_event_to_app(self) -> None:
        if self.curr_msg_data_type == "text" and not self.close_sent:
            try:
                b"".join(self.frames).decode()
            except UnicodeDecodeError:
                self.frames = []
                if self.conn.state is not State.OPEN:  # an earlier bad message began closing
                    return
                self.logger.warning(
                    '%s - "WebSocket %s" a text message is not valid UTF-8: closed (1007)',
                    get_client_addr(self.scope),
                    get_path_with_query_string(self.scope),
                )
                self.conn.send_close(1007)
                self.handle_parser_exception()
                return
        super().send_receive_event_to_app()


def abort(scope: Any) -> bool:
    """Drop the connection of a WebSocket ``scope`` at once, unsent data discarded. False when
    the server offers no :data:`ABORT` (another ASGI server): the connection then ends when the
    app returns, once its write buffer drains."""
    ext = scope.get("extensions", {}).get(ABORT)
    if ext is None:
        return False
    ext["abort"]()
    return True
