"""Microsoft Graph with app-only tokens: the only module that talks to Graph.

- Tokens (client credentials, through `identity.app_only_token`) are cached per credential until
  a minute before they expire, in the process and, encrypted, in Django's cache for the other
  processes; a changed secret or tenant is a different cache entry.
- Every call goes through the Microsoft chokepoint (`fleet.microsoft.http`): a timeout on each,
  our CA bundle, one error type.
- JSON batching: at most 20 requests per `$batch` (https://learn.microsoft.com/graph/json-batching)
  and at most 4 batches in flight, Outlook's limit of four concurrent requests per app and mailbox
  (https://learn.microsoft.com/graph/throttling-limits#outlook-service-limits).
- Work in stages (`flow`): each item's next request joins the queue as soon as its answer is
  in, and every free slot takes up to 20 queued requests of any stage, so four full batches are
  in flight whenever there is work (a chunk's second stage does not wait for its neighbours).
- Throttling: every request inside a batch is throttled on its own, so each inner 429 is retried
  after its own Retry-After (https://learn.microsoft.com/graph/throttling); 5xx and transport
  failures are retried with exponential backoff; GRAPH_MAX_ATTEMPTS bounds both. Permanent
  errors (other 4xx) are returned at once, never retried.
"""

from __future__ import annotations

import hashlib
import logging
import queue
import random
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, as_completed, wait
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any, TypeVar
from urllib.parse import quote

from django.conf import settings
from django.core.cache import cache
from django.utils import timezone

from fleet import errors, secrets
from fleet.errors import ErrorCode, FleetError
from fleet.microsoft import identity
from fleet.microsoft.http import MicrosoftError, MicrosoftSession, error_from_parts, request_json

BATCH_LIMIT = 20
MAX_IN_FLIGHT = 4
LINGER = 0.005  # s: at the end of a flow, how long a finished group waits for the next answers
MAX_BACKOFF = 30.0

log = logging.getLogger(__name__)

T = TypeVar("T")
R = TypeVar("R")


@dataclass
class GraphRequest:
    id: str
    url: str  # relative to the version root, e.g. "/users/jim%40example.com"
    method: str = "GET"
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class GraphResponse:
    status: int
    body: Any = None
    error: MicrosoftError | None = None  # set when the answer is not 2xx (after retries)

    @property
    def ok(self) -> bool:
        return self.error is None


# --- tokens -------------------------------------------------------------------------------------
# One app token per credential and resource (Graph, or Exchange Online for app-only SMTP/IMAP),
# kept until a minute before it expires. Getting or renewing one is single-flight: threads that
# need the same token wait on that entry's lock, and a thread whose token was rejected (401) only
# fetches a new one when nobody replaced the rejected one meanwhile — four parallel $batch chunks
# hit by one revoked token make one token call, not four.
#
# The token is shared with the other processes through Django's cache (CACHES: a file cache per
# host by default, Redis across hosts), encrypted with the field keys like every secret at rest:
# a worker that starts a bulk add a minute after the admin verified the credential (or after
# another worker's sweep) sends its first batch at once instead of after a token round trip, and
# N workers make one token call an hour per credential, not N. Microsoft's advice for services
# with several instances: https://learn.microsoft.com/entra/msal/python/advanced/msal-python-token-cache-serialization
GRAPH = "graph"
EXCHANGE = "exchange"
RESOURCE_SCOPES = {GRAPH: identity.GRAPH_APP_SCOPES, EXCHANGE: identity.EXCHANGE_APP_SCOPES}

_tokens: dict[tuple, identity.AppToken] = {}
_tokens_lock = threading.Lock()
_flights: dict[tuple, threading.Lock] = {}


def _token_key(credential, resource: str = GRAPH) -> tuple:
    secret = hashlib.sha256(str(credential.client_secret).encode()).hexdigest()
    return (credential.pk, credential.tenant_id, credential.client_id, secret, resource)


def _flight(key: tuple) -> threading.Lock:
    with _tokens_lock:
        return _flights.setdefault(key, threading.Lock())


def _fresh(token: identity.AppToken | None) -> bool:
    return bool(token) and token.expires_at > timezone.now() + timedelta(seconds=60)


def _shared_key(key: tuple) -> str:
    """The entry's name in Django's cache: a digest, so that it names no tenant nor client."""
    return "fleet:app-token:" + hashlib.sha256(repr(key).encode()).hexdigest()


def _shared_token(key: tuple) -> identity.AppToken | None:
    """The token another process fetched, if Django's cache has one that still decrypts."""
    try:
        kept = cache.get(_shared_key(key))
    except Exception:  # a cache that cannot be read is only a slower start
        log.warning("The shared token cache could not be read", exc_info=True)
        return None
    if not isinstance(kept, dict):
        return None
    token = secrets.decrypt(str(kept.get("token", "")))
    if secrets.is_unreadable(token):  # the field keys changed since
        return None
    try:
        expires_at = datetime.fromisoformat(str(kept.get("expires_at")))
    except ValueError:
        return None
    return identity.AppToken(str(token), expires_at)


def _share_token(key: tuple, token: identity.AppToken) -> None:
    seconds = int((token.expires_at - timezone.now()).total_seconds()) - 60
    if seconds <= 0:
        return
    kept = {"token": secrets.encrypt(token.access_token), "expires_at": token.expires_at.isoformat()}
    try:
        cache.set(_shared_key(key), kept, timeout=seconds)
    except Exception:
        log.warning("The shared token cache could not be written", exc_info=True)


def _unshare_token(key: tuple, rejected: str | None = None) -> None:
    """Drop the shared token (only if it is `rejected`, when given)."""
    if rejected is not None:
        kept = _shared_token(key)
        if kept is None or kept.access_token != rejected:
            return
    try:
        cache.delete(_shared_key(key))
    except Exception:
        log.warning("The shared token cache could not be written", exc_info=True)


def app_token(credential, resource: str = GRAPH) -> str:
    """An app-only token for the credential and resource, from the cache while it has a minute
    left. Raises FleetError (CLIENT_SECRET_EXPIRED, ADMIN_APPROVAL_REQUIRED, …) when none can be
    had."""
    key = _token_key(credential, resource)
    with _tokens_lock:
        cached = _tokens.get(key)
    if _fresh(cached):
        return cached.access_token
    with _flight(key):
        with _tokens_lock:
            cached = _tokens.get(key)
        if _fresh(cached):  # another thread got it while this one waited
            return cached.access_token
        token = _shared_token(key)
        if not _fresh(token):
            token = identity.app_only_token(credential, RESOURCE_SCOPES[resource])
            _share_token(key, token)
        with _tokens_lock:
            _tokens[key] = token
        return token.access_token


def renew_token(credential, rejected: str, resource: str = GRAPH) -> str:
    """A new token after `rejected` was refused (401): fetched once, whoever asks first; the
    others get the one it fetched."""
    key = _token_key(credential, resource)
    with _flight(key):
        with _tokens_lock:
            cached = _tokens.get(key)
            if cached and cached.access_token == rejected:
                del _tokens[key]
        _unshare_token(key, rejected)
    return app_token(credential, resource)


def forget_token(credential, resource: str = GRAPH) -> None:
    """Drop the credential's token here and for the other processes (its secret was revoked,
    its consent withdrawn …)."""
    key = _token_key(credential, resource)
    with _tokens_lock:
        _tokens.pop(key, None)
    _unshare_token(key)


def forget_all_tokens() -> None:
    """This process's tokens and discovery answers (a test's sandbox signs with new keys after
    every reset; the shared cache is cleared with Django's cache)."""
    with _tokens_lock:
        _tokens.clear()
    identity.forget_discovery()


# --- Graph's signals → the catalogue ------------------------------------------------------------
# Graph error codes: https://learn.microsoft.com/graph/errors
MAILBOX_NOT_ENABLED_CODES = {"MailboxNotEnabledForRESTAPI", "MailboxNotSupportedForRESTAPI"}
ACCESS_DENIED_CODES = {"ErrorAccessDenied", "Authorization_RequestDenied", "AccessDenied"}


def catalogue_error(error: MicrosoftError) -> ErrorCode:
    """Map a Graph failure (after retries) to the catalogue, by Graph's code and status."""
    if error.code in MAILBOX_NOT_ENABLED_CODES:
        return errors.MAILBOX_NOT_ENABLED
    if error.code in ACCESS_DENIED_CODES or error.status == 403:
        return errors.ACCESS_DENIED
    if error.status == 429:
        return errors.THROTTLED
    if error.status is None or error.status >= 500 or error.status == 408:
        return errors.GRAPH_UNAVAILABLE
    if error.status == 404:
        return errors.MAILBOX_NOT_FOUND
    if error.status == 401:
        return errors.CREDENTIAL_REJECTED
    return errors.GRAPH_REQUEST_FAILED


def user_path(address_or_id: str) -> str:
    """`/users/{id | userPrincipalName}` with the key escaped for a URL path."""
    return "/users/" + quote(address_or_id, safe="@")


def odata_string(value: str) -> str:
    """A string literal for $filter: single quotes doubled (OData ABNF)."""
    return "'" + value.replace("'", "''") + "'"


# --- the client ---------------------------------------------------------------------------------
class GraphClient:
    """Graph for one credential. Thread-safe: each thread gets its own HTTP session."""

    def __init__(self, credential, *, base_url: str | None = None):
        self.credential = credential
        self.base_url = (base_url or settings.MICROSOFT_GRAPH_URL).rstrip("/")
        self.max_attempts = max(1, settings.GRAPH_MAX_ATTEMPTS)
        self._local = threading.local()
        self._lock = threading.Lock()
        self.longest_retry_after = 0.0  # the longest Retry-After Graph asked for (a 429)

    def token(self) -> str:
        return app_token(self.credential)

    def _session(self) -> MicrosoftSession:
        if not hasattr(self._local, "session"):
            self._local.session = MicrosoftSession()
        return self._local.session

    def _call(self, method: str, url: str, **kwargs: Any) -> Any:
        token = self._local.token = self.token()
        try:
            return request_json(method, url, access_token=token, session=self._session(), **kwargs)
        except MicrosoftError as error:
            if error.status == 429 and error.retry_after is not None:
                self.note_retry_after(error.retry_after)
            raise

    def note_retry_after(self, seconds: float) -> None:
        with self._lock:
            self.longest_retry_after = max(self.longest_retry_after, seconds)

    def renew(self) -> None:
        """The token this thread last sent was refused: a new one, single-flight."""
        renew_token(self.credential, getattr(self._local, "token", ""))

    def delay(self, error: MicrosoftError, attempt: int) -> float:
        """How long to wait before trying again: Graph's Retry-After when it gave one (capped
        at GRAPH_MAX_RETRY_AFTER), else exponential backoff with jitter."""
        if error.retry_after is not None:
            return min(error.retry_after, settings.GRAPH_MAX_RETRY_AFTER)
        base = settings.GRAPH_RETRY_BACKOFF * 2 ** (attempt - 1)
        return min(base, MAX_BACKOFF) * random.uniform(0.5, 1.0)  # noqa: S311 (jitter)

    # --- one request, no batching (permission checks: fleet/credentials.py) ------------------
    def get(self, url: str, headers: dict[str, str] | None = None) -> Any:
        """One GET with the same retry rules as batches; raises MicrosoftError once they are
        used up (or at once for a permanent error)."""
        renewed = False
        attempt = 0
        while True:
            attempt += 1
            try:
                return self._call("GET", self.base_url + url, headers=headers or {})
            except MicrosoftError as error:
                if error.status == 401 and not renewed:
                    self.renew()  # revoked or expired early: once more
                    renewed = True
                    continue
                if error.permanent or attempt >= self.max_attempts:
                    raise
                time.sleep(self.delay(error, attempt))

    # --- JSON batching --------------------------------------------------------------------------
    def _post_batch(self, requests: Sequence[GraphRequest]) -> dict[str, GraphResponse]:
        payload = {
            "requests": [
                {"id": r.id, "method": r.method, "url": r.url, "headers": r.headers}
                if r.headers
                else {"id": r.id, "method": r.method, "url": r.url}
                for r in requests
            ]
        }
        data = self._call("POST", f"{self.base_url}/$batch", json=payload) or {}
        answers: dict[str, GraphResponse] = {}
        for item in data.get("responses") or []:
            status = int(item.get("status") or 0)
            body = item.get("body")
            error = None
            if not 200 <= status < 300:
                error = error_from_parts(status, item.get("headers") or {}, body)
                if status == 429 and error.retry_after is not None:
                    self.note_retry_after(error.retry_after)
            answers[str(item.get("id"))] = GraphResponse(status, body, error)
        for r in requests:
            if r.id not in answers:  # never seen from Graph, but not worth a crash
                answers[r.id] = GraphResponse(
                    502,
                    None,
                    MicrosoftError(
                        "502 missing from the $batch answer", permanent=False, status=502
                    ),
                )
        return answers

    def send(self, requests: Sequence[GraphRequest]) -> dict[str, GraphResponse]:
        """Up to 20 requests in one `$batch`; the ones Graph could not answer now (429, 5xx,
        or the whole envelope failing) go again, each when its wait is over, in smaller batches,
        until they succeed, fail permanently or use up GRAPH_MAX_ATTEMPTS. Every request gets
        a GraphResponse. May raise FleetError when no token can be had."""
        if len(requests) > BATCH_LIMIT:
            raise ValueError(f"a $batch holds at most {BATCH_LIMIT} requests")
        pending = {r.id: r for r in requests}
        attempts = dict.fromkeys(pending, 0)
        not_before = dict.fromkeys(pending, 0.0)
        results: dict[str, GraphResponse] = {}
        renewed = False
        while pending:
            now = time.monotonic()
            due = [r for r in pending.values() if not_before[r.id] <= now]
            if not due:
                time.sleep(min(not_before[i] for i in pending) - now)
                continue
            try:
                answers = self._post_batch(due)
            except MicrosoftError as error:  # the envelope itself failed
                answers = {r.id: GraphResponse(error.status or 0, None, error) for r in due}
            now = time.monotonic()
            # A 401 means the cached token was revoked or expired early: once more with a new
            # one, not counted as an attempt.
            renew = not renewed and any(answers[r.id].status == 401 for r in due)
            if renew:
                self.renew()
                renewed = True
            for r in due:
                answer = answers[r.id]
                if renew and answer.status == 401:
                    continue
                attempts[r.id] += 1
                if answer.ok or answer.error.permanent or attempts[r.id] >= self.max_attempts:
                    results[r.id] = answer
                    del pending[r.id]
                else:
                    not_before[r.id] = now + self.delay(answer.error, attempts[r.id])
        return results

    def pipeline(
        self,
        items: Sequence[T],
        step: Callable[[GraphClient, Sequence[T]], R],
        size: int = BATCH_LIMIT,
    ) -> Iterator[R]:
        """Run `step(self, chunk)` for each chunk of `items` on at most 4 threads, yielding each
        chunk's result as soon as it is done. A step sends one batch at a time, so no more than
        four batches are ever in flight. Steps must not touch the database (the caller records
        what they return)."""
        chunks = [items[i : i + size] for i in range(0, len(items), size)]
        if not chunks:
            return
        with ThreadPoolExecutor(max_workers=min(MAX_IN_FLIGHT, len(chunks))) as pool:
            futures = [pool.submit(step, self, chunk) for chunk in chunks]
            for future in as_completed(futures):
                yield future.result()

    def flow(
        self,
        items: Sequence[T],
        start: Callable[[T], GraphRequest],
        advance: Callable[[T, GraphResponse], GraphRequest | None],
        abort: Callable[[T, FleetError], None],
        *,
        at_least: int = 1,
    ) -> Iterator[list[T]]:
        """Take every item through its requests, stage after stage: `start(item)` is its first
        request, `advance(item, answer)` its next one, or None when the item is done. Requests of
        any stage share the batches: whenever one of the four slots is free it takes up to 20
        queued requests (see `fill`), so no batch waits for its neighbours' stages and four full
        batches are in flight whenever there is work. Retries follow `send`'s rules
        (Retry-After, backoff, one token renewal, GRAPH_MAX_ATTEMPTS). When no token can be had,
        `abort(item, failure)` ends every unfinished item.

        Yields the items finished since the last yield, as lists of `at_least` items or more
        (shorter ones once fewer than `at_least` are left). The batches are sent and their answers read by a thread of
        its own, so that what the caller does with a list (writing it to the database) never
        holds the requests back; `start`, `advance` and `abort` run on that thread and must not
        touch the database."""
        if not items:
            return
        finished: queue.Queue = queue.Queue()
        stop = threading.Event()
        thread = threading.Thread(
            target=self._flow, args=(items, start, advance, abort, finished, stop), daemon=True
        )
        thread.start()
        group: list[T] = []
        left = len(items)  # not yet finished
        try:
            while True:
                done = [finished.get()]
                while True:  # whatever else finished while the caller was busy, in one list
                    try:
                        done.append(finished.get_nowait())
                    except queue.Empty:
                        break
                arrived = [i for d in done if isinstance(d, list) for i in d]
                group += arrived
                left -= len(arrived)
                failure = next((d for d in done if isinstance(d, BaseException)), None)
                end = failure is not None or any(d is None for d in done)
                # Near the end (fewer than `at_least` items left in flight) every list goes out
                # at once: what is written while the last batches are in flight is not written
                # after them.
                if group and (end or len(group) >= at_least or left < at_least):
                    yield group
                    group = []
                if failure is not None:
                    raise failure
                if end:
                    return
        finally:
            stop.set()  # the caller stopped early (LeaseLost …): no new batches
            thread.join()

    def _flow(self, items, start, advance, abort, finished: queue.Queue, stop) -> None:
        try:
            self._run_flow(items, start, advance, abort, finished, stop)
        except BaseException as exc:  # handed to the caller's thread, raised there
            finished.put(exc)
        else:
            finished.put(None)

    def _run_flow(self, items, start, advance, abort, finished: queue.Queue, stop) -> None:
        # Each item's current request carries the item's index as its id: unique in any batch.
        fresh = deque((i, replace(start(item), id=str(i))) for i, item in enumerate(items))
        follow_ups: deque[tuple[int, GraphRequest]] = deque()
        waiting: list[tuple[float, int, GraphRequest]] = []  # (not before, index, request)
        attempts = [0] * len(items)
        renewed = [False] * len(items)
        ended = [False] * len(items)
        unfinished = len(items)
        in_flight: set[Future] = set()

        def fill(in_flight: set[Future]) -> None:
            """Every free slot takes up to 20 queued requests. Follow-ups first (items finish,
            and are written, early), but while fewer than a round's worth (4 x 20) are queued,
            first requests first: so that when the first requests run out there are always
            follow-ups left for every slot, and no slot waits for a stage to come back."""
            while len(in_flight) < MAX_IN_FLIGHT and (follow_ups or fresh) and not stop.is_set():
                reserve = MAX_IN_FLIGHT * BATCH_LIMIT
                order = (follow_ups, fresh) if len(follow_ups) >= reserve else (fresh, follow_ups)
                batch = []
                for source in order:
                    while len(batch) < BATCH_LIMIT and source:
                        batch.append(source.popleft())
                in_flight.add(pool.submit(self._post_for_flow, batch))

        with ThreadPoolExecutor(max_workers=MAX_IN_FLIGHT) as pool:
            while unfinished and not stop.is_set():
                now = time.monotonic()
                if waiting:
                    follow_ups.extend((i, r) for t, i, r in waiting if t <= now)
                    waiting = [w for w in waiting if w[0] > now]
                fill(in_flight)
                if not in_flight:
                    time.sleep(max(0.0, min(t for t, _, _ in waiting) - now))
                    continue
                timeout = max(0.0, min(t for t, _, _ in waiting) - now) if waiting else None
                done, in_flight = wait(in_flight, timeout=timeout, return_when=FIRST_COMPLETED)
                group: list = []
                while done:
                    future = done.pop()
                    try:
                        batch, answers, token = future.result()
                        # A 401: the token was revoked or expired early. Once more with a new one
                        # (fetched once for all the batches it failed), not counted as an attempt.
                        if any(answers[str(i)].status == 401 and not renewed[i] for i, _ in batch):
                            renew_token(self.credential, token)
                    except FleetError as failure:  # no token any more (secret revoked mid-run …)
                        stop.set()
                        left = [i for i in range(len(items)) if not ended[i]]
                        for i in left:
                            abort(items[i], failure)
                        finished.put([items[i] for i in left])
                        return
                    now = time.monotonic()
                    for i, request in batch:
                        answer = answers[str(i)]
                        if answer.status == 401 and not renewed[i]:
                            renewed[i] = True
                            follow_ups.append((i, request))
                            continue
                        attempts[i] += 1
                        if not (
                            answer.ok or answer.error.permanent or attempts[i] >= self.max_attempts
                        ):
                            waiting.append(
                                (now + self.delay(answer.error, attempts[i]), i, request)
                            )
                            continue
                        following = advance(items[i], answer)
                        if following is None:
                            ended[i] = True
                            unfinished -= 1
                            group.append(items[i])
                        else:
                            attempts[i], renewed[i] = 0, False
                            follow_ups.append((i, replace(following, id=str(i))))
                    fill(in_flight)  # this batch's slot, at once: its follow-ups first
                    if not done and in_flight and not (fresh or follow_ups or waiting):
                        # Nothing left to send, the last answers out: those due within a few
                        # ms join this group, so the caller writes the last batches together
                        # instead of one after the other (each write has its fixed cost).
                        done, in_flight = wait(in_flight, LINGER, return_when=FIRST_COMPLETED)
                if group:
                    finished.put(group)

    def _post_for_flow(self, batch: list[tuple[int, GraphRequest]]):
        """One batch for `flow`, on a pool thread: the batch, its answers by id, and the token
        it was sent with (to renew exactly that one on a 401)."""
        requests = [r for _, r in batch]
        try:
            answers = self._post_batch(requests)
        except MicrosoftError as error:  # the envelope itself failed
            answers = {r.id: GraphResponse(error.status or 0, None, error) for r in requests}
        return batch, answers, getattr(self._local, "token", "")
