"""The raw Kaggle API calls, on the ``kaggle`` SDK: push a kernel version, read the status of one
version, read the weekly quota, delete a kernel.

The SDK is imported lazily and only once credentials are known to exist: importing ``kaggle``
authenticates at once and prints a help text (then swallows a ``SystemExit``) when it finds none.

The SDK talks to ``api.kaggle.com`` and has no endpoint setting (``KAGGLE_API_ENVIRONMENT`` picks
between Kaggle's own hosts). ``LAUNCH_KAGGLE_ENDPOINT`` points our client at another server (the
tests' fake API): the SDK's client is built for its "local" environment, whose request paths are
``<endpoint>/api/v1/<service>/<method>``, with the endpoint replaced. Everything else (request
building, authentication, response parsing, errors) is the SDK's own code.

Cancelling: the API has ``CancelKernelSession``, but it takes a kernel session id that no call of
the SDK (2.2) returns for a pushed version, and the SDK refuses to delete one version ("Deleting
individual kernel versions is not supported"). What stops a session from here is ``DeleteKernel``
(all versions, and the secrets attached to it); the backend first asks the kernel through the
store (see ``launcher.backends.kaggle.backend``).

Credentials. Where the SDK finds them (``KaggleCredentials.find``). A 401 means they are wrong,
revoked or expired: an OAuth access token (``kaggle auth login``) lasts 12 h while a job's
supervisor runs for days, and the SDK takes a token for valid until 30 min after it expired, so
on a 401 with OAuth credentials the client trades the refresh token for a new access token (the
SDK's own ``KaggleCredentials.refresh_access_token``, which saves it where the SDK looks) and
makes the call again. Any other 401, or one after the refresh, is ``CredentialsError``: no retry
can help, and the job fails at once saying which credentials were refused. A 429/5xx while
authenticating is a wait like any other.

Refusals. Kaggle refuses a push for want of capacity in several ways, all :class:`KaggleCapacityError`
(a ``NoCapacityError``: the supervisor waits with back-off, or tries the next option): the
response's ``error`` "Maximum batch GPU session count of 2 reached." (HTTP 200), HTTP 429 (rate
limit), 502/503/504 (often an HTML page from the front end), an accelerator the account may not
use, an exhausted weekly quota.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from launcher.backends.base import BackendError, CredentialsError, MissingDependencyError, NoCapacityError
from launcher.backends.kaggle.config import MISSING_CREDENTIALS, KaggleCredentials, KaggleSettings

INSTALL_HINT = "the kaggle backend needs the kaggle SDK: pip install 'launch[kaggle]'"
# KernelWorkerStatus names, lower-cased. A session is over in one of these:
TERMINAL = frozenset({"complete", "error", "cancel_acknowledged"})


class KaggleAPIError(BackendError):
    """A Kaggle API call failed (network, HTTP error, or an error in the response)."""


class KaggleCapacityError(KaggleAPIError, NoCapacityError):
    """Kaggle refused a push for want of capacity (see the module docstring)."""


RENEW = ("sign in again with `kaggle auth login`, or set KAGGLE_API_TOKEN to a new token from "
         "https://www.kaggle.com/settings/api")
CAPACITY_STATUS = frozenset({429, 502, 503, 504})
CAPACITY_WORDS = re.compile(r"session count|quota|accelerator|machine.?shape|not available|too many|"
                            r"rate limit|try again", re.IGNORECASE)


@dataclass(frozen=True)
class Quota:
    """The account's weekly accelerator quota, as Kaggle counts it (``kaggle quota``)."""

    gpu_left_s: float
    gpu_total_s: float
    tpu_left_s: float
    tpu_total_s: float
    resets_at: float | None  # epoch seconds

    def left(self, kind: str) -> tuple[float, float]:
        return (self.tpu_left_s, self.tpu_total_s) if kind == "tpu" else (self.gpu_left_s, self.gpu_total_s)


@dataclass(frozen=True)
class PushResult:
    ref: str
    version: int | None
    url: str


@dataclass(frozen=True)
class KernelStatus:
    state: str  # queued, running, complete, error, cancel_requested, cancel_acknowledged, new_script
    message: str = ""

    @property
    def terminal(self) -> bool:
        return self.state in TERMINAL


class KaggleClient:
    """One authenticated SDK handle, made on first use."""

    def __init__(self, settings: KaggleSettings, credentials: KaggleCredentials | None = None):
        self.settings = settings
        self.credentials = credentials
        self._sdk: Any = None

    def check(self) -> KaggleCredentials:
        """Raise CredentialsError unless credentials exist; returns where they are."""
        creds = self.credentials or KaggleCredentials.find()
        if not creds.present:
            raise CredentialsError(MISSING_CREDENTIALS)
        self.credentials = creds
        return creds

    def _api(self) -> Any:
        if self._sdk is not None:
            return self._sdk
        self.check()
        try:
            from kaggle.api.kaggle_api_extended import KaggleApi
        except ModuleNotFoundError as e:
            raise MissingDependencyError(f"{INSTALL_HINT} (missing module {e.name!r})") from None
        api = KaggleApi()
        if self.settings.endpoint:
            api.build_kaggle_client = _endpoint_builder(api, self.settings.endpoint)
        try:
            api.authenticate()
        except SystemExit:
            source = self.credentials.source if self.credentials else None
            if source and "token" in source.lower():  # found, but Kaggle did not take it
                raise CredentialsError(f"Kaggle refused the access token in {source} (expired or revoked?): "
                                       f"{RENEW}") from None
            raise CredentialsError(MISSING_CREDENTIALS) from None
        except Exception as e:  # the token check (IntrospectToken) or the OAuth refresh did not answer
            if _http_status(e) == 401:
                raise self._refused(e) from None
            if _http_status(e) in CAPACITY_STATUS:
                raise KaggleCapacityError(f"Kaggle did not answer the sign-in: {_describe(e)}") from None
            raise KaggleAPIError(f"Kaggle sign-in failed: {_describe(e)}") from None
        self._sdk = api
        return api

    def _call(self, fn: Callable[[Any], Any]) -> Any:
        """``fn(sdk)``; on a 401 with OAuth credentials, once more after refreshing the access
        token. CredentialsError for a 401 that stays; other errors as the SDK raised them."""
        for again in (False, True):
            api = self._api()
            try:
                return fn(api)
            except Exception as e:
                if _http_status(e) != 401:
                    raise
                self._sdk = None
                if again or not self._oauth() or not self._refresh(api):
                    raise self._refused(e) from None
        raise AssertionError("unreachable")

    def _oauth(self) -> bool:
        return bool(self.credentials and self.credentials.source and "kaggle auth login" in self.credentials.source)

    def _refresh(self, api: Any) -> bool:
        """A new OAuth access token from the refresh token (saved in ~/.kaggle/credentials.json)."""
        from kagglesdk.kaggle_creds import KaggleCredentials as SdkCredentials

        api.config_values.pop(api.CONFIG_NAME_TOKEN, None)  # the expired one: not sent along
        try:
            with api.build_kaggle_client() as kaggle:
                creds = SdkCredentials.load(client=kaggle)
                if creds is None:
                    return False
                creds.refresh_access_token()
        except Exception:
            return False
        return True

    def _refused(self, e: BaseException) -> CredentialsError:
        source = (self.credentials.source if self.credentials else None) or "the Kaggle credentials"
        return CredentialsError(f"Kaggle refused the credentials in {source} ({_describe(e)}): {RENEW}")

    @property
    def username(self) -> str:
        return str(self._api().config_values.get("username") or "")

    def push(self, folder: Path, timeout: int | None = None, accelerator: str | None = None) -> PushResult:
        """Push the kernel in ``folder`` (kernel-metadata.json + its code file) as a new version,
        which Kaggle queues to run at once."""
        try:
            resp = self._call(lambda api: api.kernels_push(str(folder), timeout=str(int(timeout)) if timeout else None,
                                                           acc=accelerator))
        except BackendError:
            raise
        except Exception as e:
            status, said = _http_status(e), _describe(e)
            if status in CAPACITY_STATUS or (status in (400, 403) and CAPACITY_WORDS.search(said)):
                raise KaggleCapacityError(f"Kaggle refused the push: {said}") from None
            raise KaggleAPIError(f"kaggle kernels push failed: {said}") from None
        if getattr(resp, "error", None):
            if CAPACITY_WORDS.search(resp.error):
                raise KaggleCapacityError(f"Kaggle refused the push: {resp.error}")
            raise KaggleAPIError(f"kaggle kernels push failed: {resp.error}")
        return PushResult(ref=resp.ref or "", version=resp.version_number, url=resp.url or "")

    def status(self, kernel: str, version: int | None = None) -> KernelStatus:
        """The status of one version of the kernel (``owner/slug``), the latest when None (which
        may be another job's, or one saved in the editor)."""
        ref = f"{kernel}/{version}" if version is not None else kernel
        try:
            resp = self._call(lambda api: api.kernels_status(ref))
        except BackendError:
            raise
        except Exception as e:
            raise KaggleAPIError(f"kaggle kernels status {ref} failed: {_describe(e)}") from None
        state = getattr(resp.status, "name", str(resp.status)).lower()
        return KernelStatus(state=state, message=resp.failure_message or "")

    def quota(self) -> Quota:
        """The weekly GPU/TPU quota (the SDK's ``quota_view``); KaggleAPIError when the call fails."""
        try:
            resp = self._call(lambda api: api.quota_view())
        except BackendError:
            raise
        except Exception as e:
            raise KaggleAPIError(f"kaggle quota failed: {_describe(e)}") from None

        def left(q: Any) -> tuple[float, float]:
            if q is None:
                return 0.0, 0.0
            total = q.total_time_allowed.total_seconds() if q.total_time_allowed else 0.0
            used = sum(t.total_seconds() for t in (q.time_used, q.time_reserved) if t)
            return max(0.0, total - used), total

        reset = resp.quota_refresh_time
        if reset is not None and reset.utcoffset() is None:
            reset = reset.replace(tzinfo=dt.timezone.utc)  # the SDK gives UTC without a zone
        (gl, gt), (tl, tt) = left(resp.gpu_quota), left(resp.tpu_quota)
        if resp.gpu_quota is None:
            raise KaggleAPIError("kaggle quota answered no GPU quota")
        return Quota(gl, gt, tl, tt, reset.timestamp() if reset else None)

    def delete(self, kernel: str) -> None:
        """Delete the kernel (every version; a running session stops). Quiet when it is gone."""
        try:
            self._call(lambda api: api.kernels_delete(kernel, no_confirm=True))
        except BackendError:
            raise
        except Exception as e:
            if _http_status(e) == 404:
                return
            error = KaggleCapacityError if _http_status(e) in CAPACITY_STATUS else KaggleAPIError
            raise error(f"kaggle kernels delete {kernel} failed: {_describe(e)}") from None


def _endpoint_builder(api: Any, endpoint: str):
    """``api.build_kaggle_client`` for another server (see the module docstring)."""

    def build():
        from kagglesdk import KaggleClient as SdkClient, KaggleEnv

        client = SdkClient(env=KaggleEnv.LOCAL, username=api.config_values.get(api.CONFIG_NAME_USER),
                           password=api.config_values.get(api.CONFIG_NAME_KEY),
                           api_token=api.config_values.get(api.CONFIG_NAME_TOKEN),
                           response_processor=api.get_response_processor())
        client.http_client()._endpoint = endpoint
        return client

    return build


def _response(e: BaseException) -> Any:
    resp = getattr(e, "response", None)
    if resp is None:
        resp = getattr(e.__cause__ or e.__context__, "response", None)
    return resp


def _http_status(e: BaseException) -> int | None:
    resp = _response(e)
    return getattr(resp, "status_code", None) if resp is not None else None


def _describe(e: Exception) -> str:
    """An SDK error in one line: the HTTP status and Kaggle's message when there is one (the SDK
    turns a 401/403 into a ValueError about benchmark slugs; the HTTP error is its context)."""
    resp = _response(e)
    if resp is not None:
        try:
            msg = resp.json().get("message") or resp.text
        except Exception:
            msg = getattr(resp, "text", "")
        msg = str(msg).strip()
        if msg.lstrip().lower().startswith(("<!doctype", "<html")):  # a front end's error page
            title = re.search(r"<title>(.*?)</title>", msg, re.IGNORECASE | re.DOTALL)
            msg = title.group(1).strip() if title else "an HTML error page"
        return f"HTTP {resp.status_code}: {msg[:300]}"
    return f"{type(e).__name__}: {e}"
