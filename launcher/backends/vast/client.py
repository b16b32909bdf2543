"""Raw Vast.ai API calls through the ``vastai`` SDK: search offers, create, show, destroy.

The SDK finds the API key in its usual places (``VAST_API_KEY``, ``~/.config/vastai/vast_api_key``,
``~/.vast_api_key``) and sends it as a bearer header; this module never reads, stores or prints
it. Errors become ``BackendError``s that carry the HTTP status and the server's message, never the
request headers. ``VAST_URL`` (the SDK's own variable) points it at another server, e.g. a test
fake.
"""

from __future__ import annotations

import logging
from typing import Any

import requests
from vastai import VastAI

from launcher.backends.base import BackendError
from launcher.backends.vast.config import MISSING_CREDENTIALS, VastCredentials, VastSettings
from launcher.errors import InfraError

log = logging.getLogger(__name__)


class VastAPIError(BackendError):
    def __init__(self, what: str, status: int | None, detail: str):
        self.status = status
        code = f"HTTP {status}" if status else "no answer"
        super().__init__(f"Vast.ai {what} failed ({code}): {detail}")


class OfferTaken(VastAPIError):
    """The offer cannot be rented any more (someone else took it, or it changed)."""


class OutcomeUnknown(VastAPIError):
    """The create call got no clear answer: an instance may or may not exist."""


def _detail(r: requests.Response) -> str:
    try:
        doc = r.json()
    except ValueError:
        return (r.text or r.reason or "")[:300]
    if isinstance(doc, dict):
        return str(doc.get("msg") or doc.get("error") or doc.get("detail") or doc)[:300]
    return str(doc)[:300]


def _error(what: str, e: Exception, cls: type[VastAPIError] = VastAPIError) -> VastAPIError:
    if isinstance(e, requests.HTTPError) and e.response is not None:
        return cls(what, e.response.status_code, _detail(e.response))
    if isinstance(e, requests.RequestException):  # the message names the URL, not the headers
        return cls(what, None, type(e).__name__)
    return cls(what, None, str(e)[:300])


def _status(e: Exception) -> int | None:
    if isinstance(e, requests.HTTPError) and e.response is not None:
        return e.response.status_code
    return None


class VastClient:
    """A thin layer over ``vastai.VastAI``; every method is one API call (the SDK retries 429
    and 5xx itself)."""

    def __init__(self, settings: VastSettings, sdk: Any = None):
        if sdk is None:
            if not VastCredentials.find().present:
                raise InfraError(MISSING_CREDENTIALS)
            sdk = VastAI(server_url=settings.server_url, retry=3, raw=True, quiet=True)
        self.sdk = sdk

    def search(self, query: str, offer_type: str, order: str, disk_gb: float, limit: int = 50) -> list[dict]:
        """Offers matching ``query`` (the CLI's query language), as the API returns them."""
        try:
            found = self.sdk.search_offers(query=query, type=offer_type, order=order, limit=limit,
                                           storage=disk_gb)
        except (requests.RequestException, ValueError) as e:
            raise _error("offer search", e) from None
        return list(found or [])

    def create(self, offer_id: int, *, image: str, disk_gb: float, label: str,
               bid_price: float | None, env: dict[str, str] | None = None) -> int:
        """Rent ``offer_id`` (interruptible at ``bid_price`` when given, else on-demand) with SSH
        access; returns the instance id. OfferTaken when the offer is gone; OutcomeUnknown when
        the call got no clear answer (the instance may exist: find it by ``label``)."""
        try:
            out = self.sdk.create_instance(id=int(offer_id), image=image, disk=disk_gb, label=label,
                                           bid_price=bid_price, env=env or {}, ssh=True,
                                           cancel_unavail=True)
        except requests.HTTPError as e:
            status = _status(e) or 0
            cls = OfferTaken if 400 <= status < 500 and status not in (401, 403) else OutcomeUnknown
            raise _error(f"create on offer {offer_id}", e, cls) from None
        except requests.RequestException as e:
            raise _error(f"create on offer {offer_id}", e, OutcomeUnknown) from None
        if not isinstance(out, dict) or not out.get("success") or not out.get("new_contract"):
            raise OfferTaken(f"create on offer {offer_id}", None, str(out)[:300])
        return int(out["new_contract"])

    def attach_key(self, instance_id: int, public_key: str) -> None:
        try:
            self.sdk.attach_ssh(int(instance_id), public_key)
        except requests.RequestException as e:
            raise _error(f"attaching the SSH key to instance {instance_id}", e) from None

    def show(self, instance_id: int) -> dict[str, Any] | None:
        """The instance, or None when the API no longer knows it."""
        try:
            return self.sdk.show_instance(int(instance_id))
        except requests.RequestException as e:
            if _status(e) == 404:
                return None
            raise _error(f"showing instance {instance_id}", e) from None

    def find(self, label_prefix: str) -> list[dict[str, Any]]:
        """Our instances whose label starts with ``label_prefix``."""
        try:
            rows = self.sdk.show_instances()
        except requests.RequestException as e:
            raise _error("listing instances", e) from None
        return [r for r in rows or [] if str(r.get("label") or "").startswith(label_prefix)]

    def destroy(self, instance_id: int) -> None:
        """Destroy the instance; one that is already gone counts as success."""
        try:
            out = self.sdk.destroy_instance(int(instance_id))
        except requests.RequestException as e:
            if _status(e) == 404:
                return
            raise _error(f"destroying instance {instance_id}", e) from None
        if isinstance(out, dict) and out.get("success") is False:
            msg = str(out.get("msg") or out.get("error") or "")
            if not any(w in msg.lower() for w in ("not found", "no such", "does not exist")):
                raise VastAPIError(f"destroying instance {instance_id}", None, msg[:300])
        log.debug("destroyed Vast.ai instance %s", instance_id)
