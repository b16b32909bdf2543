"""The raw Kaggle API calls, on the ``kaggle`` SDK: push a kernel version, read its status.

The SDK is imported lazily and only once credentials are known to exist: importing ``kaggle``
authenticates at once and prints a help text (then swallows a ``SystemExit``) when it finds none.

The SDK talks to ``api.kaggle.com`` and has no endpoint setting (``KAGGLE_API_ENVIRONMENT`` picks
between Kaggle's own hosts). ``LAUNCH_KAGGLE_ENDPOINT`` points our client at another server (the
tests' fake API): the SDK's client is built for its "local" environment, whose request paths are
``<endpoint>/api/v1/<service>/<method>``, with the endpoint replaced. Everything else (request
building, authentication, response parsing, errors) is the SDK's own code.

Cancelling: the API has ``CancelKernelSession``, but it takes a kernel session id that no public
call returns for a pushed version, so the backend stops a session through the store instead
(see ``launcher.backends.kaggle.backend``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from launcher.backends.base import BackendError, MissingDependencyError
from launcher.backends.kaggle.config import MISSING_CREDENTIALS, KaggleCredentials, KaggleSettings

INSTALL_HINT = "the kaggle backend needs the kaggle SDK: pip install 'launch[kaggle]'"
# KernelWorkerStatus names, lower-cased. A session is over in one of these:
TERMINAL = frozenset({"complete", "error", "cancel_acknowledged"})


class KaggleAPIError(BackendError):
    """A Kaggle API call failed (network, HTTP error, or an error in the response)."""


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
        """Raise BackendError unless credentials exist; returns where they are."""
        creds = self.credentials or KaggleCredentials.find()
        if not creds.present:
            raise BackendError(MISSING_CREDENTIALS)
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
            raise BackendError(MISSING_CREDENTIALS) from None
        self._sdk = api
        return api

    @property
    def username(self) -> str:
        return str(self._api().config_values.get("username") or "")

    def push(self, folder: Path, timeout: int | None = None, accelerator: str | None = None) -> PushResult:
        """Push the kernel in ``folder`` (kernel-metadata.json + its code file) as a new version,
        which Kaggle queues to run at once."""
        api = self._api()
        try:
            resp = api.kernels_push(str(folder), timeout=str(int(timeout)) if timeout else None, acc=accelerator)
        except Exception as e:
            raise KaggleAPIError(f"kaggle kernels push failed: {_describe(e)}") from None
        if getattr(resp, "error", None):
            raise KaggleAPIError(f"kaggle kernels push failed: {resp.error}")
        return PushResult(ref=resp.ref or "", version=resp.version_number, url=resp.url or "")

    def status(self, kernel: str) -> KernelStatus:
        """The status of the kernel's latest version (``owner/slug``)."""
        api = self._api()
        try:
            resp = api.kernels_status(kernel)
        except Exception as e:
            raise KaggleAPIError(f"kaggle kernels status {kernel} failed: {_describe(e)}") from None
        state = getattr(resp.status, "name", str(resp.status)).lower()
        return KernelStatus(state=state, message=resp.failure_message or "")


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


def _describe(e: Exception) -> str:
    """An SDK error in one line: the HTTP status and Kaggle's message when there is one (the SDK
    turns a 401/403 into a ValueError about benchmark slugs; the HTTP error is its context)."""
    resp = getattr(e, "response", None)
    if resp is None:
        resp = getattr(e.__cause__ or e.__context__, "response", None)
    if resp is not None:
        try:
            msg = resp.json().get("message") or resp.text
        except Exception:
            msg = getattr(resp, "text", "")
        return f"HTTP {resp.status_code}: {str(msg).strip()[:300]}"
    return f"{type(e).__name__}: {e}"
