"""The Twilio REST actions the agent takes on a live call (hang up, transfer).

Enabled when ``TWILIO_ACCOUNT_SID`` and ``TWILIO_AUTH_TOKEN`` are both set. Without them the
service still ends and transfers calls, by closing the stream and letting the ``<Connect
action>`` answer decide what happens next (see ``telephony.twiml.after_stream``).
"""

from __future__ import annotations

import logging

from twilio.http.async_http_client import AsyncTwilioHttpClient
from twilio.rest import Client

from telephony.logs import fields

log = logging.getLogger(__name__)


class TwilioRestError(Exception):
    """A REST action failed; the caller falls back to closing the stream."""


class TwilioRest:
    """Async Twilio REST client for in-call actions, with a bounded request time."""

    def __init__(self, account_sid: str, auth_token: str, *, timeout_s: float = 10.0) -> None:
        self._http = AsyncTwilioHttpClient(timeout=timeout_s, max_retries=1)
        self._client = Client(account_sid, auth_token, http_client=self._http)

    async def hang_up(self, call_sid: str) -> None:
        await self._update(call_sid, status="completed")

    async def redirect(self, call_sid: str, twiml: str) -> None:
        """Replace the call's TwiML (Twilio then sends ``stop`` on the stream: not a hang-up)."""
        await self._update(call_sid, twiml=twiml)

    async def _update(self, call_sid: str, **kwargs: str) -> None:
        try:
            await self._client.calls(call_sid).update_async(**kwargs)
        except Exception as exc:  # twilio raises its own and aiohttp's errors
            log.warning("twilio.rest_failed", extra=fields(action=sorted(kwargs), error=str(exc)))
            raise TwilioRestError(str(exc)) from exc

    async def aclose(self) -> None:
        await self._http.close()
