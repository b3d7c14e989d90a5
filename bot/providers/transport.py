"""The HTTP transport under the `openai` client: urllib3's connection pool behind httpx2's
transport interface.

A streamed reply is one HTTP chunk a token. httpx2's own transport (httpcore2 and h11) parses
each chunk through some forty Python calls; urllib3 reads chunks with the standard library's
buffered reader, for about half the CPU of a 150-token reply (docs/performance.md). The SDK
still builds the requests, authenticates, maps statuses to errors and sets the timeouts;
httpx2 still decodes the body (gzip) and splits the lines. Errors come out as httpx2's, so the
SDK and the provider see what they would have seen.

Requests that would go through a proxy (HTTP(S)_PROXY and NO_PROXY in the environment) keep
httpx2's own transport, which honours them (see `lean_transport_for`).
"""

from __future__ import annotations

import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from urllib.parse import urlsplit

import httpx2
import urllib3
from urllib3.exceptions import (
    ConnectTimeoutError,
    NewConnectionError,
    ProtocolError,
    ProxyError,
    ReadTimeoutError,
    SSLError,
)

# Connections kept open per host, as many as a worker has threads streaming at once; more are
# opened when needed and closed after use.
POOL_SIZE = 128
READ_SIZE = 64 * 1024


def lean_transport_for(base_url: str | None) -> LeanTransport | None:
    """A LeanTransport for the API at base_url, or None (httpx2's own) when the environment
    sends its requests through a proxy."""
    url = base_url or "https://api.openai.com/v1"
    host = urlsplit(url).hostname or ""
    proxies = urllib.request.getproxies()
    if proxies and not urllib.request.proxy_bypass(host):
        return None
    return LeanTransport()


class LeanTransport(httpx2.BaseTransport):
    def __init__(self) -> None:
        self._pool = urllib3.PoolManager(
            num_pools=8,
            maxsize=POOL_SIZE,
            block=False,
            retries=False,
            ssl_context=httpx2.create_ssl_context(),
        )

    def handle_request(self, request: httpx2.Request) -> httpx2.Response:
        timeouts = request.extensions.get("timeout", {})
        raw = request.headers.raw
        with _as_httpx_errors(request):
            response = self._pool.urlopen(
                request.method,
                str(request.url),
                body=request.read(),
                headers=urllib3.HTTPHeaderDict(
                    [(name.decode("latin-1"), value.decode("latin-1")) for name, value in raw]
                ),
                redirect=False,
                retries=False,
                preload_content=False,
                decode_content=False,  # httpx2 decodes, as it would its own transport's body
                timeout=urllib3.Timeout(connect=timeouts.get("connect"), read=timeouts.get("read")),
            )
        return httpx2.Response(
            status_code=response.status,
            headers=list(response.headers.items()),
            stream=_Body(response, request),
            extensions={
                "http_version": b"HTTP/1.1",
                "reason_phrase": (response.reason or "").encode("latin-1", "replace"),
            },
        )

    def close(self) -> None:
        self._pool.clear()


class _Body(httpx2.SyncByteStream):
    """A response's body as it arrives: a chunk of a chunked response at a time."""

    def __init__(self, response: urllib3.BaseHTTPResponse, request: httpx2.Request) -> None:
        self._response = response
        self._request = request

    def __iter__(self) -> Iterator[bytes]:
        with _as_httpx_errors(self._request):
            yield from self._response.stream(READ_SIZE, decode_content=False)

    def close(self) -> None:
        response = self._response
        if not response.closed:
            # Left before its end (a reply stopped early): the connection can't be reused.
            response.close()
        response.release_conn()


@contextmanager
def _as_httpx_errors(request: httpx2.Request) -> Iterator[None]:
    try:
        yield
    except (NewConnectionError, SSLError) as exc:  # before ConnectTimeoutError: a subclass
        raise httpx2.ConnectError(str(exc), request=request) from exc
    except ConnectTimeoutError as exc:
        raise httpx2.ConnectTimeout(str(exc), request=request) from exc
    except ReadTimeoutError as exc:
        raise httpx2.ReadTimeout(str(exc), request=request) from exc
    except ProxyError as exc:
        raise httpx2.ProxyError(str(exc), request=request) from exc
    except ProtocolError as exc:
        # The server closed the connection or broke off a chunk: httpx2's name for it.
        raise httpx2.RemoteProtocolError(str(exc), request=request) from exc
    except urllib3.exceptions.HTTPError as exc:
        raise httpx2.TransportError(str(exc), request=request) from exc
