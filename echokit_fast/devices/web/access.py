"""Who may read the console's data (``/console/api/...``: the devices, the turns with their
transcripts, the running configuration with its vendor keys).

Those answers say more than a device or an API client needs, so the rule is stricter than for
``/v1``, which is open when no key is set:

* with ``[server] api_key``/``api_keys`` (or ``--api-key``) set, a request must carry
  ``Authorization: Bearer <one of the keys>`` (401 otherwise), from any address;
* with no key set, only a client on this machine (a loopback address) is answered; another one
  gets 403 saying to set a key -- a server left open on its network does not hand out its
  config to whoever asks.

The pages themselves (``/console/status``, ``/console/config``) hold no data and are served to
anyone; they ask for the key when the API says 401 or 403.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse

from echokit_fast.api.common import error_response
from echokit_fast.server.security import authorized, is_loopback

__all__ = ["API_PREFIX", "refusal"]

#: where the console's JSON routes live
API_PREFIX = "/console/api"


def refusal(request: Request, keys: tuple[str, ...]) -> JSONResponse | None:
    """The 401/403 answer (an OpenAI-style error body) for a request that may not read the
    console's data under the rule of the module docstring, None for one that may."""
    if keys:
        if authorized(request, keys):
            return None
        given = "authorization" in request.headers
        message = (
            "Incorrect API key provided."
            if given
            else "Missing API key: send Authorization: Bearer <key> (the server's --api-key)."
        )
        return error_response(
            401, message, code="invalid_api_key", headers={"WWW-Authenticate": "Bearer"}
        )
    client = request.client.host if request.client else ""
    if is_loopback(client):
        return None
    return error_response(
        403,
        "The console's data is served to this machine only while the server has no API key: "
        "set [server] api_key (or serve --api-key) to open it to other machines.",
        code="console_local_only",
    )
