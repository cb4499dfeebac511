"""``{{ http(s)://... }}`` includes in a system prompt: replaced by the body GET returns
(HTTP 200 only; otherwise by the bare URL), bodies cached 60 s, at most 100 URLs."""

from __future__ import annotations

import logging
import re
import time
from collections import OrderedDict
from collections.abc import Callable

import httpx

from echokit_fast.backends.http import PROMPT_MAX_BYTES, get_capped

__all__ = ["INCLUDE_MAX", "INCLUDE_TTL", "IncludeCache", "expand_includes"]

log = logging.getLogger(__name__)

INCLUDE_TTL = 60.0
INCLUDE_MAX = 100
_INCLUDE_RE = re.compile(r"\{\{(\s*https?://\S+?\s*)\}\}")


class IncludeCache:
    """Bodies of ``{{url}}`` includes: ``ttl`` seconds, at most ``max_entries`` URLs (LRU).
    Only successful (HTTP 200) fetches are cached."""

    def __init__(
        self,
        *,
        ttl: float = INCLUDE_TTL,
        max_entries: int = INCLUDE_MAX,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.ttl = ttl
        self.max_entries = max_entries
        self.clock = clock
        self._data: OrderedDict[str, tuple[float, str]] = OrderedDict()

    def get(self, url: str) -> str | None:
        hit = self._data.get(url)
        if hit is None:
            return None
        if hit[0] <= self.clock():
            del self._data[url]
            return None
        self._data.move_to_end(url)
        return hit[1]

    def put(self, url: str, body: str) -> None:
        self._data[url] = (self.clock() + self.ttl, body)
        self._data.move_to_end(url)
        while len(self._data) > self.max_entries:
            self._data.popitem(last=False)

    def __len__(self) -> int:
        return len(self._data)


async def expand_includes(text: str, http: httpx.AsyncClient, cache: IncludeCache) -> str:
    """Replace every ``{{ http(s)://... }}`` in ``text`` by the body GET returns (status 200;
    otherwise, or on a transport error, by the URL itself). Each URL is fetched once."""
    urls = [m.group(1).strip() for m in _INCLUDE_RE.finditer(text)]
    bodies: dict[str, str] = {}
    for url in dict.fromkeys(urls):
        body = cache.get(url)
        if body is None:
            try:
                status, data = await get_capped(http, url, PROMPT_MAX_BYTES)
                if status == 200:
                    body = data.decode("utf-8", "replace")
                    cache.put(url, body)
                else:
                    log.warning("prompt include %s: HTTP %d", url, status)
            except (httpx.HTTPError, ValueError) as exc:
                log.warning("prompt include %s: %s", url, exc)
        if body is not None:
            bodies[url] = body
    return _INCLUDE_RE.sub(lambda m: bodies.get(m.group(1).strip(), m.group(1).strip()), text)
