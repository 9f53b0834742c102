"""The Twilio REST actions of the service: hang up, transfer, place an outbound call.

Enabled when ``TWILIO_ACCOUNT_SID`` and ``TWILIO_AUTH_TOKEN`` are both set. Without them the
service still ends and transfers calls, by closing the stream and letting the ``<Connect
action>`` answer decide what happens next (see ``telephony.twilio.twiml.after_stream``); placing
calls needs them.

``base_url`` (``TWILIO_API_BASE_URL``) sends every request to another host instead of
``https://api.twilio.com``: a local stand-in in tests, or an egress proxy.
"""

from __future__ import annotations

import base64
import logging
from dataclasses import dataclass
from typing import Any

import aiohttp
from twilio.base.exceptions import TwilioException
from twilio.http.async_http_client import AsyncTwilioHttpClient
from twilio.http.response import Response
from twilio.rest import Client

from agent.logs import fields
from telephony.errors import TelephonyError

log = logging.getLogger(__name__)


class TwilioRestError(TelephonyError):
    """A REST action failed; the caller falls back to closing the stream."""


TWILIO_API: str = "https://api.twilio.com"
#: What a REST request can fail with: Twilio's answer, or aiohttp's transport errors.
_REST_ERRORS = (TwilioException, aiohttp.ClientError, TimeoutError, OSError)


class _HttpClient(AsyncTwilioHttpClient):  # type: ignore[misc]
    """The SDK's aiohttp client, with two changes.

    - Credentials go in an ``Authorization`` header. The SDK passes ``auth=(user, password)``,
      which aiohttp 3.13 deprecates (``BasicAuth``) and 4.0 removes.
    - With ``base_url``, the API host is swapped for it (a stand-in, or an egress proxy).
    """

    def __init__(self, base_url: str | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.base_url = base_url.rstrip("/") if base_url else None

    async def request(
        self,
        method: str,
        url: str,
        params: dict[str, object] | None = None,
        data: dict[str, object] | None = None,
        headers: dict[str, str] | None = None,
        auth: tuple[str, str] | None = None,
        timeout: float | None = None,  # noqa: ASYNC109 - the SDK's signature
        allow_redirects: bool = False,
    ) -> Response:
        if self.base_url and url.startswith(TWILIO_API):
            url = self.base_url + url[len(TWILIO_API) :]
        if auth is not None:
            user, password = auth
            token = base64.b64encode(f"{user}:{password}".encode()).decode()
            headers = {**(headers or {}), "Authorization": f"Basic {token}"}
        return await super().request(
            method, url, params, data, headers, None, timeout, allow_redirects
        )


@dataclass(frozen=True)
class PlacedCall:
    """An outbound call Twilio accepted (it is queued and will ring)."""

    call_sid: str
    status: str
    to: str
    from_: str


class TwilioRest:
    """Async Twilio REST client, with a bounded request time."""

    def __init__(
        self,
        account_sid: str,
        auth_token: str,
        *,
        timeout_s: float = 10.0,
        base_url: str | None = None,
    ) -> None:
        self._http = _HttpClient(base_url, timeout=timeout_s, max_retries=1)
        self._client = Client(account_sid, auth_token, http_client=self._http)

    async def place_call(
        self, to: str, from_: str, *, url: str, status_callback: str, timeout_s: int = 30
    ) -> PlacedCall:
        """Ask Twilio to call ``to``; when answered, Twilio fetches TwiML from ``url``.

        ``status_callback`` hears how it ended when it never reached the agent (busy, no
        answer, failed). Twilio's own answering-machine detection is deliberately not used:
        the agent instead waits for the callee's first words (see the README).
        """
        try:
            call = await self._client.calls.create_async(
                to=to,
                from_=from_,
                url=url,
                method="POST",
                status_callback=status_callback,
                status_callback_method="POST",
                status_callback_event=["completed"],
                timeout=timeout_s,
            )
        except _REST_ERRORS as exc:
            log.warning("twilio.place_call_failed", extra=fields(error=str(exc)))
            raise TwilioRestError(str(exc)) from exc
        return PlacedCall(str(call.sid), str(call.status or "queued"), to, from_)

    async def hang_up(self, call_sid: str) -> None:
        await self._update(call_sid, status="completed")

    async def redirect(self, call_sid: str, twiml: str) -> None:
        """Replace the call's TwiML (Twilio then sends ``stop`` on the stream: not a hang-up)."""
        await self._update(call_sid, twiml=twiml)

    async def _update(self, call_sid: str, **kwargs: str) -> None:
        try:
            await self._client.calls(call_sid).update_async(**kwargs)
        except _REST_ERRORS as exc:
            log.warning("twilio.rest_failed", extra=fields(action=sorted(kwargs), error=str(exc)))
            raise TwilioRestError(str(exc), call_sid=call_sid) from exc

    async def aclose(self) -> None:
        await self._http.close()
