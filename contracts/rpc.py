"""Retries with exponential backoff for JSON-RPC calls that failed for transient reasons.

A node behind a load balancer or a public endpoint drops connections, times out and
answers 429/5xx now and then; those calls are safe to repeat (reads, and re-sending the
same signed transaction). Reverts and bad requests are never retried.
"""

from __future__ import annotations

import random
import re
import time
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import certifi
import requests
import urllib3
from web3 import Web3
from web3.exceptions import (
    ProviderConnectionError,
    RequestTimedOut,
    TooManyRequests,
    Web3RPCError,
)

from flchain.contracts.errors import InvalidArgumentError, RPCError

T = TypeVar("T")

_TRANSIENT_TYPES: tuple[type[BaseException], ...] = (
    ConnectionError,
    TimeoutError,
    requests.exceptions.ConnectionError,
    requests.exceptions.Timeout,
    requests.exceptions.ChunkedEncodingError,
    ProviderConnectionError,
    RequestTimedOut,
    TooManyRequests,
)
_TRANSIENT_RPC_CODES = {-32005}  # "limit exceeded" (EIP-1474)
_TRANSIENT_TEXT = re.compile(
    r"rate limit|too many requests|temporarily unavailable|service unavailable|bad gateway",
    re.IGNORECASE,
)
_NONCE_TEXT = re.compile(
    r"nonce too low|nonce too high|invalid transaction nonce|already known|known transaction"
    r"|replacement transaction underpriced|nonce has already been used",
    re.IGNORECASE,
)


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how patiently to retry: delays grow by `multiplier` up to `max_delay`,
    with +-`jitter` relative randomness so that many nodes do not retry in lockstep."""

    attempts: int = 5
    base_delay: float = 0.25
    max_delay: float = 4.0
    multiplier: float = 2.0
    jitter: float = 0.1

    def __post_init__(self) -> None:
        if self.attempts < 1:
            raise InvalidArgumentError(f"attempts must be >= 1, got {self.attempts}")
        if self.base_delay < 0 or self.max_delay < 0 or self.multiplier < 1:
            raise InvalidArgumentError("delays must be >= 0 and multiplier >= 1")
        if not 0 <= self.jitter < 1:
            raise InvalidArgumentError(f"jitter must be in [0, 1), got {self.jitter}")

    def delay(self, attempt: int) -> float:
        """Seconds to wait after failed attempt number `attempt` (0-based)."""
        base = min(self.max_delay, self.base_delay * self.multiplier**attempt)
        return base * (1 + random.uniform(-self.jitter, self.jitter))


def _rpc_error_code(exc: Web3RPCError) -> int | None:
    response = exc.rpc_response or {}
    error = response.get("error") if isinstance(response, dict) else None
    code = error.get("code") if isinstance(error, dict) else None
    return code if isinstance(code, int) else None


def is_transient(exc: BaseException) -> bool:
    """True for failures that a later retry can fix: transport errors, timeouts, 429/5xx."""
    if isinstance(exc, _TRANSIENT_TYPES):
        return True
    if isinstance(exc, requests.exceptions.HTTPError) and exc.response is not None:
        status = exc.response.status_code
        return status == 429 or status >= 500
    if isinstance(exc, Web3RPCError):
        if _rpc_error_code(exc) in _TRANSIENT_RPC_CODES:
            return True
        return bool(_TRANSIENT_TEXT.search(exc.message or ""))
    return False


def is_nonce_error(exc: BaseException) -> bool:
    """True when the node rejected a transaction because of its nonce."""
    return bool(_NONCE_TEXT.search(str(exc)))


def call_with_retries(
    fn: Callable[[], T],
    policy: RetryPolicy,
    *,
    what: str = "RPC call",
    sleep: Callable[[float], None] = time.sleep,
) -> T:
    """Run `fn`, retrying transient failures per `policy`; other errors propagate as is.

    Raises RPCError (chained to the last failure) when every attempt failed transiently.
    """
    for attempt in range(policy.attempts - 1):
        try:
            return fn()
        except Exception as exc:
            if not is_transient(exc):
                raise
            sleep(policy.delay(attempt))
    try:
        return fn()
    except Exception as exc:
        if is_transient(exc):
            raise RPCError(f"{what} failed after {policy.attempts} attempts: {exc}") from exc
        raise


# Seconds an HTTP JSON-RPC request may take unless the caller says otherwise.
DEFAULT_RPC_TIMEOUT = 30.0


def http_web3(url: str, timeout: float = DEFAULT_RPC_TIMEOUT) -> Web3:
    """A Web3 over HTTP as every flchain client uses one: each request bounded by `timeout`,
    no retries of web3's own (a `RetryPolicy` decides those, under the caller's deadline), and
    eth_chainId cached. web3's validation asks the chain id before every eth_call and
    eth_estimateGas; a chain's id never changes, and uncached it was an extra round trip per
    read (a node reads every block). The session reads the environment's proxy and CA
    settings once (`environment_session`), not on every request; where none of them needs
    requests (no proxy, no .netrc login, no client certificate), bodies go out through
    urllib3's pool directly (`DirectPost`)."""
    session = environment_session(url)
    provider = Web3.HTTPProvider(
        url,
        request_kwargs={"timeout": timeout},
        session=session,
        exception_retry_configuration=None,
        cache_allowed_requests=True,
        cacheable_requests={"eth_chainId"},
    )
    direct = DirectPost.for_session(url, session)
    if direct is not None and hasattr(provider, _WEB3_POSTER):
        setattr(provider, _WEB3_POSTER, direct)
    return Web3(provider)


# Where web3 8's HTTPProvider keeps what it posts request bodies through: an object whose
# `make_post_request(endpoint_uri, data, **request_kwargs)` returns the response body.
_WEB3_POSTER = "_request_session_manager"
# A response body over this is refused before it is parsed: no JSON-RPC answer a client of
# ours asks for comes near it (a block with its transactions, a page of logs).
MAX_RESPONSE_BYTES = 64 * 2**20


class DirectPost:
    """Posts web3's JSON-RPC bodies over urllib3's connection pool, without requests.

    requests' session machinery (preparing the request, merging settings, hooks, cookies)
    was half the CPU of a JSON-RPC call: 0.45 ms per call through web3's provider against
    0.22 ms through urllib3 alone, and a node makes a few dozen calls per round. urllib3
    does no retries here (a `RetryPolicy` decides), follows no redirects, and its errors
    become the built-in ConnectionError and TimeoutError, which `is_transient` retries; an
    HTTP error status becomes requests' HTTPError, which it also classifies."""

    def __init__(self, ca_certs: str | None = None) -> None:
        self._pool = urllib3.PoolManager(
            maxsize=8, retries=False, cert_reqs="CERT_REQUIRED", ca_certs=ca_certs
        )

    @classmethod
    def for_session(cls, url: str, session: requests.Session) -> DirectPost | None:
        """A `DirectPost` that applies what `session` took from the environment, or None
        where it needs requests (a proxy, a .netrc login, a client certificate)."""
        scheme = urllib.parse.urlsplit(url).scheme
        if scheme not in ("http", "https") or session.auth is not None or session.cert:
            return None
        if session.proxies.get(scheme) or session.proxies.get("all"):
            return None
        verify = session.verify
        if verify is False:
            return None  # an unverified https endpoint stays with requests' own handling
        return cls(ca_certs=verify if isinstance(verify, str) else certifi.where())

    def make_post_request(self, endpoint_uri: str, data: bytes | str, **kwargs: Any) -> bytes:
        timeout = float(kwargs.get("timeout") or DEFAULT_RPC_TIMEOUT)
        headers = kwargs.get("headers") or {"Content-Type": "application/json"}
        try:
            response = self._pool.request(
                "POST",
                str(endpoint_uri),
                body=data,
                headers=headers,
                timeout=urllib3.Timeout(connect=timeout, read=timeout),
                redirect=False,
                preload_content=False,
            )
            try:
                body = response.read(MAX_RESPONSE_BYTES + 1)
            except BaseException:
                response.close()  # a half-read answer must not go back to the pool
                raise
            if len(body) > MAX_RESPONSE_BYTES:
                response.close()
                raise RPCError(f"{endpoint_uri} answered over {MAX_RESPONSE_BYTES} bytes")
            response.release_conn()
        except urllib3.exceptions.NewConnectionError as exc:  # a kind of connect timeout too
            raise ConnectionError(f"POST {endpoint_uri}: {exc}") from exc
        except urllib3.exceptions.TimeoutError as exc:
            raise TimeoutError(f"POST {endpoint_uri}: {exc}") from exc
        except urllib3.exceptions.HTTPError as exc:
            raise ConnectionError(f"POST {endpoint_uri}: {exc}") from exc
        if response.status >= 400:
            failed = requests.Response()
            failed.status_code, failed.url, failed._content = response.status, endpoint_uri, body
            raise requests.exceptions.HTTPError(
                f"{response.status} from {endpoint_uri}", response=failed
            )
        return bytes(body)


def environment_session(url: str) -> requests.Session:
    """A requests session for `url` with the environment's settings (HTTP(S)_PROXY,
    NO_PROXY, REQUESTS_CA_BUNDLE, .netrc) applied now and not looked up again.

    requests looks them up on every request by default: it walks the whole environment for
    proxy variables, a third of the CPU of a small JSON-RPC call (0.31 against 0.44 ms here),
    and a node makes a dozen calls per round."""
    session = requests.Session()
    settings = session.merge_environment_settings(url, {}, None, None, None)
    session.proxies.update(settings["proxies"])
    session.verify = settings["verify"]
    session.cert = settings["cert"]
    session.auth = requests.utils.get_netrc_auth(url)
    session.trust_env = False
    return session
