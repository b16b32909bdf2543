"""Raw Vast.ai API calls through the ``vastai`` SDK: search offers, create, show, list, destroy, keys.

The SDK finds the API key in its usual places (``VAST_API_KEY``, ``~/.config/vastai/vast_api_key``,
``~/.vast_api_key``) and sends it as a bearer header; this module never reads, stores or prints
it. Errors become ``BackendError``s that carry the HTTP status and the server's message, never the
request headers. ``VAST_URL`` (the SDK's own variable) points it at another server, e.g. a test
fake.

How the service behaves, and what this layer does about it:

- Per-IP rate limits, 429 without Retry-After: every call waits its turn in a ``Pacer`` and a 429
  is retried after a jittered back-off, for up to ``rate_limit_wait`` seconds (then
  ``RateLimited``). The SDK's own retries are off (``retry=1``): they come within 0.4 s, are
  refused again, and would re-send a create that may already have rented the offer.
- A create is sent once. A 4xx answer is a refusal (``OfferTaken``); a 5xx, a timeout or a broken
  connection may have rented the offer all the same (``OutcomeUnknown``: find it by its label).
- Reads (search, show, list) and destroy are safe to repeat: a 5xx or a broken connection is
  retried a few times.
- Show and list are read without the SDK's post-processing, which raises TypeError on the null
  ``start_date`` of a new instance; the list is read page by page (25 a page) to the end.
- 401/403 is ``CredentialsError``: the key is wrong, and no retry can help.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

import requests
from vastai import VastAI

from launcher.backends.base import BackendError, CredentialsError
from launcher.backends.vast.config import (MISSING_CREDENTIALS, REFUSED_CREDENTIALS, VastCredentials,
                                           VastSettings)
from launcher.backends.vast.pacing import Pacer
from launcher.errors import InfraError

log = logging.getLogger(__name__)
TRANSIENT = (502, 503, 504)
READ_RETRIES = 3
MAX_PAGES = 400  # 10 000 instances: a listing that never ends is an API bug, not an account


class VastAPIError(BackendError):
    def __init__(self, what: str, status: int | None, detail: str):
        self.status = status
        code = f"HTTP {status}" if status else "no answer"
        super().__init__(f"Vast.ai {what} failed ({code}): {detail}")


class OfferTaken(VastAPIError):
    """The offer cannot be rented any more (someone else took it, or it changed)."""


class OutcomeUnknown(VastAPIError):
    """The create call got no clear answer: an instance may or may not exist."""


class RateLimited(VastAPIError):
    """The API kept answering 429 for longer than ``rate_limit_wait``: nothing was done."""


def _detail(r: requests.Response) -> str:
    try:
        doc = r.json()
    except ValueError:
        return (r.text or r.reason or "")[:300]
    if isinstance(doc, dict):
        return str(doc.get("msg") or doc.get("error") or doc.get("detail") or doc)[:300]
    return str(doc)[:300]


def _quota(r: requests.Response) -> bool:
    """A 429 for the daily search quota: it resets at midnight UTC, waiting here cannot help."""
    try:
        return r.json().get("error") == "search_quota_exceeded"
    except (ValueError, AttributeError):
        return False


def _key_body(public_key: str) -> str:
    """``"ssh-ed25519 AAAA... me@host" -> "ssh-ed25519 AAAA..."``: what identifies a key."""
    return " ".join(public_key.split()[:2])


class VastClient:
    """A thin layer over ``vastai.VastAI``; every method is one logical API call, paced, with the
    retries that are safe for it (see the module docstring)."""

    def __init__(self, settings: VastSettings, sdk: Any = None, *,
                 clock: Callable[[], float] = time.monotonic, sleep: Callable[[float], None] = time.sleep,
                 pacer: Pacer | None = None):
        if sdk is None:
            if not VastCredentials.find().present:
                raise InfraError(MISSING_CREDENTIALS)
            sdk = VastAI(server_url=settings.server_url, retry=1, raw=True, quiet=True)
        self.sdk = sdk
        self.settings = settings
        self.clock, self.sleep = clock, sleep
        self.pacer = pacer or Pacer(scale=settings.api_pace, clock=clock, sleep=sleep)

    # --- one call, paced ---------------------------------------------------------------------
    def _call(self, name: str, what: str, send: Callable[[], Any], *, repeatable: bool = True,
              ok: tuple[int, ...] = ()) -> Any:
        """``send()`` (an SDK call) once its turn comes; 429s backed off, transient failures
        retried when ``repeatable``. Returns what ``send`` returned, or the Response of a status
        in ``ok``; raises a VastAPIError (OutcomeUnknown for a non-repeatable call that may have
        happened)."""
        started, throttled, failures = self.clock(), 0, 0
        while True:
            self.pacer.wait(name)
            try:
                try:
                    out = send()
                finally:
                    self.pacer.done(name)
                if not isinstance(out, requests.Response) or out.status_code < 400:
                    return out
                response = out
            except requests.HTTPError as e:
                if e.response is None:
                    raise VastAPIError(what, None, type(e).__name__) from None
                response = e.response
            except requests.RequestException as e:  # no answer: the message names the URL, not the key
                if not repeatable:
                    raise OutcomeUnknown(what, None, type(e).__name__) from None
                failures += 1
                if failures >= READ_RETRIES:
                    raise VastAPIError(what, None, type(e).__name__) from None
                self.pacer.backoff(name, failures)
                continue
            status = response.status_code
            if status in ok:
                return response
            if status in (401, 403):
                raise CredentialsError(REFUSED_CREDENTIALS.format(detail=f"HTTP {status}: {_detail(response)}"))
            if status == 429:
                throttled += 1
                if self.clock() - started >= self.settings.rate_limit_wait or _quota(response):
                    raise RateLimited(what, status, f"{_detail(response)} (for {self.clock() - started:.0f} s)")
                log.debug("Vast.ai %s: 429, backing off (try %d)", what, throttled)
                self.pacer.backoff(name, throttled)
                continue
            if status >= 500 and not repeatable:
                raise OutcomeUnknown(what, status, _detail(response))
            if status in TRANSIENT and failures + 1 < READ_RETRIES:
                failures += 1
                self.pacer.backoff(name, failures)
                continue
            cls = OfferTaken if name == "create" and 400 <= status < 500 else VastAPIError
            raise cls(what, status, _detail(response))

    def _json(self, name: str, what: str, path: str, method: str = "get", *, ok: tuple[int, ...] = (),
              **kw: Any) -> tuple[int, Any]:
        """A raw call through the SDK's HTTP client (its auth, its URL building): (status, JSON)."""
        http = getattr(self.sdk.client, method)
        r = self._call(name, what, lambda: http(path, **kw), ok=ok)
        try:
            return r.status_code, r.json()
        except ValueError:
            raise VastAPIError(what, r.status_code, "the answer is not JSON") from None

    # --- offers and instances ----------------------------------------------------------------
    def search(self, query: str, offer_type: str, order: str, disk_gb: float, limit: int = 50) -> list[dict]:
        """Offers matching ``query`` (the CLI's query language), as the API returns them."""
        def send():
            try:
                return self.sdk.search_offers(query=query, type=offer_type, order=order, limit=limit,
                                              storage=disk_gb)
            except ValueError as e:  # the SDK could not parse the query
                raise VastAPIError("offer search", None, str(e)[:300]) from None

        return list(self._call("search", "offer search", send) or [])

    def create(self, offer_id: int, *, image: str, disk_gb: float, label: str,
               bid_price: float | None, env: dict[str, str] | None = None) -> int:
        """Rent ``offer_id`` (interruptible at ``bid_price`` when given, else on-demand) with SSH
        access; returns the instance id. Sent once: OfferTaken when refused, RateLimited when the
        API kept answering 429 (nothing rented), OutcomeUnknown when it may have rented all the
        same (find the instance by ``label``)."""
        what = f"create on offer {offer_id}"
        out = self._call("create", what, lambda: self.sdk.create_instance(
            id=int(offer_id), image=image, disk=disk_gb, label=label, bid_price=bid_price,
            env=env or {}, ssh=True, cancel_unavail=True), repeatable=False)
        if not isinstance(out, dict) or not out.get("success") or not out.get("new_contract"):
            raise OfferTaken(what, None, str(out)[:300])
        return int(out["new_contract"])

    def show(self, instance_id: int) -> dict[str, Any] | None:
        """The instance as the API has it now (fields may be null right after create), or None
        when the API does not know it (destroyed, or not known yet)."""
        status, doc = self._json("show", f"showing instance {instance_id}", f"/instances/{int(instance_id)}/",
                                 query_args={"owner": "me"}, ok=(404,))
        if status == 404 or not isinstance(doc, dict):
            return None
        return doc.get("instances") or None

    def instances(self) -> list[dict[str, Any]]:
        """Every instance of the account, all pages (25 a page), oldest first."""
        params: dict[str, Any] = {"select_filters": {}, "order_by": [{"col": "id", "dir": "asc"}], "limit": 25}
        rows: list[dict[str, Any]] = []
        for _ in range(MAX_PAGES):
            _, doc = self._json("list", "listing instances", "/api/v1/instances/", query_args=dict(params))
            doc = doc if isinstance(doc, dict) else {}
            rows += [r for r in doc.get("instances") or [] if isinstance(r, dict)]
            token = doc.get("next_token")
            if not token:
                return rows
            params["after_token"] = token
        raise VastAPIError("listing instances", None, f"more than {MAX_PAGES} pages")

    def find(self, label_prefix: str) -> list[dict[str, Any]]:
        """Our instances whose label starts with ``label_prefix``."""
        return [r for r in self.instances() if str(r.get("label") or "").startswith(label_prefix)]

    def destroy(self, instance_id: int) -> None:
        """Destroy the instance; one that is already gone counts as success."""
        what = f"destroying instance {instance_id}"
        status, out = self._json("destroy", what, f"/instances/{int(instance_id)}/", "delete",
                                 json_data={}, ok=(404,))
        if status == 404:
            return
        if isinstance(out, dict) and out.get("success") is False:
            msg = str(out.get("msg") or out.get("error") or "")
            if not any(w in msg.lower() for w in ("not found", "no such", "does not exist")):
                raise VastAPIError(what, None, msg[:300])
        log.debug("destroyed Vast.ai instance %s", instance_id)

    # --- SSH keys ----------------------------------------------------------------------------
    def ensure_account_key(self, public_key: str) -> bool:
        """Make ``public_key`` one of the account's SSH keys (which Vast.ai adds to every new
        instance); True when it already was. Safe to call twice."""
        _, keys = self._json("keys", "listing the account's SSH keys", "/ssh/")
        if isinstance(keys, dict):
            keys = keys.get("ssh_keys") or keys.get("keys") or []
        want = _key_body(public_key)
        if any(want in " ".join(str(v) for v in k.values()) for k in keys or [] if isinstance(k, dict)):
            return True
        self._json("keys", "adding the SSH key to the account", "/ssh/", "post", json_data={"ssh_key": public_key})
        return False

    def attach_key(self, instance_id: int, public_key: str) -> None:
        """Add the key to one instance; the API refuses it until the instance runs."""
        self._json("attach", f"attaching the SSH key to instance {instance_id}",
                   f"/instances/{int(instance_id)}/ssh/", "post", json_data={"ssh_key": public_key})
