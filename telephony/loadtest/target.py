"""Where load-test calls go, and how they get there: straight to the Media Stream, or the way
Twilio does it (voice webhook POST, then the ``<Stream url>`` of the TwiML it returns).

The request building, signing and TwiML reading are pure; :func:`dial` (httpx async, for the
asyncio runner) and :func:`dial_sync` (httpx sync, for Locust's gevent workers, where
monkey-patched sockets make it cooperative) are thin I/O around them.

Signatures (``--auth-token``) are computed exactly as Twilio computes them: the webhook POST
over the webhook URL plus the form fields, the WebSocket upgrade over the ``<Stream url>``
exactly as written in the TwiML. When the load tester reaches the server at another address
than the one the server is configured with (``PUBLIC_URL``; e.g. a backend behind its
proxy), give that public base as ``public_url``: signatures use it, and stream URLs under it
are reached at the webhook's origin instead.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final, Literal
from urllib.parse import urlsplit, urlunsplit

import httpx

from telephony.caller import SIMULATED_FROM, SIMULATED_TO
from telephony.errors import TelephonyError
from telephony.twilio.signature import SIGNATURE_HEADER, sign

__all__ = [
    "DialFailed",
    "StreamPlan",
    "Target",
    "dial",
    "dial_sync",
    "direct_plan",
    "parse_stream_twiml",
    "stream_plan",
    "webhook_request",
]

WebhookFailure = Literal[
    "webhook_rejected", "webhook_error", "webhook_timeout", "turned_away", "bad_twiml"
]
#: Twilio's ``ApiVersion`` form field.
API_VERSION: Final = "2010-04-01"


class DialFailed(TelephonyError):
    """The webhook step failed: ``kind`` says how (HTTP 403 → ``webhook_rejected``; a TwiML
    without ``<Connect><Stream>``, such as the busy message → ``turned_away``)."""

    def __init__(self, message: str, kind: WebhookFailure, status: int | None = None) -> None:
        super().__init__(message)
        self.kind: WebhookFailure = kind
        self.status = status


@dataclass(frozen=True, slots=True)
class Target:
    """The server under test: ``media_url`` (``ws://…/twilio/media``) or ``webhook_url``
    (``https://…/twilio/voice``), exactly one of them."""

    media_url: str | None = None
    webhook_url: str | None = None
    auth_token: str | None = None
    public_url: str | None = None
    from_number: str = SIMULATED_FROM
    to_number: str = SIMULATED_TO
    timeout_s: float = 10.0

    def __post_init__(self) -> None:
        if (self.media_url is None) == (self.webhook_url is None):
            raise ValueError("give exactly one of media_url and webhook_url")

    @property
    def url(self) -> str:
        return self.webhook_url or self.media_url or ""


@dataclass(frozen=True, slots=True)
class StreamPlan:
    """How to open one call's Media Stream: where, with which headers, and the
    ``customParameters`` for ``start`` (None: the recording's own)."""

    connect_url: str
    headers: dict[str, str]
    custom_parameters: dict[str, str] | None = None


def _public(url: str, public_url: str | None) -> str:
    """``url`` as the server knows itself (its PUBLIC_URL), for signatures."""
    if public_url is None:
        return url
    base, parts = urlsplit(public_url), urlsplit(url)
    return urlunsplit(
        (base.scheme, base.netloc, base.path.rstrip("/") + parts.path, parts.query, "")
    )


def webhook_request(
    target: Target,
    call_sid: str,
    account_sid: str,
    custom_parameters: Mapping[str, str] | None = None,
) -> tuple[str, dict[str, str], dict[str, str]]:
    """The voice webhook POST Twilio sends for a new inbound call: ``(url, form, headers)``.

    ``From``/``To`` come from a recorded call's parameters (``from``/``to``, as our server
    passes them on) when present, so a replay looks like the call it replays.
    """
    assert target.webhook_url is not None
    params = custom_parameters or {}
    form = {
        "CallSid": call_sid,
        "AccountSid": account_sid,
        "From": params.get("from") or target.from_number,
        "To": params.get("to") or target.to_number,
        "Direction": "inbound",
        "CallStatus": "ringing",
        "ApiVersion": API_VERSION,
    }
    headers: dict[str, str] = {}
    if target.auth_token is not None:
        signed_url = _public(target.webhook_url, target.public_url)
        headers[SIGNATURE_HEADER] = sign(target.auth_token, signed_url, form)
    return target.webhook_url, form, headers


def parse_stream_twiml(twiml: str) -> tuple[str, dict[str, str]]:
    """The ``<Connect><Stream url>`` and its ``<Parameter>`` elements, as Twilio reads them.

    Raises :class:`DialFailed`: ``turned_away`` for a TwiML that answers without a stream
    (``<Say>``/``<Hangup>``/``<Reject>``: the server is busy or draining), ``bad_twiml`` for
    anything else that is not a stream.
    """
    try:
        root = ET.fromstring(twiml)
    except ET.ParseError as exc:
        raise DialFailed(f"webhook answered with invalid XML: {exc}", "bad_twiml") from None
    if root.tag != "Response":
        raise DialFailed(f"webhook answered <{root.tag}>, not <Response>", "bad_twiml")
    stream = root.find("./Connect/Stream")
    if stream is None:
        said = " ".join((el.text or "").strip() for el in root.iter("Say"))
        if any(el.tag in ("Say", "Hangup", "Reject") for el in root):
            raise DialFailed(f"turned away: {said or 'hung up'}", "turned_away")
        raise DialFailed("webhook TwiML has no <Connect><Stream>", "bad_twiml")
    url = stream.get("url")
    if not url:
        raise DialFailed("<Stream> without url", "bad_twiml")
    params = {
        p.get("name", ""): p.get("value", "") for p in stream.findall("Parameter") if p.get("name")
    }
    return url, params


def stream_plan(target: Target, stream_url: str, parameters: Mapping[str, str]) -> StreamPlan:
    """Where to connect for ``stream_url`` (from the TwiML), signed as Twilio signs it.

    Twilio only opens ``wss://`` streams; a load test against a plain-HTTP webhook (a local
    server, no TLS) reaches the same host over ``ws://``. A stream under ``public_url`` is
    reached at the webhook's origin.
    """
    assert target.webhook_url is not None
    webhook, stream = urlsplit(target.webhook_url), urlsplit(stream_url)
    public = urlsplit(target.public_url) if target.public_url else webhook
    connect = stream_url
    if stream.netloc == public.netloc:
        scheme = "ws" if webhook.scheme == "http" else "wss"
        connect = urlunsplit((scheme, webhook.netloc, stream.path, stream.query, ""))
    headers: dict[str, str] = {}
    if target.auth_token is not None:
        headers[SIGNATURE_HEADER] = sign(target.auth_token, stream_url, {})
    return StreamPlan(connect, headers, dict(parameters))


def direct_plan(target: Target, custom_parameters: Mapping[str, str] | None = None) -> StreamPlan:
    """Straight to ``media_url``: the upgrade signed over its ``wss://`` form (or the same
    path under ``public_url``). ``start`` carries the recording's parameters, with the
    caller/callee numbers a webhook would have added when it has none."""
    assert target.media_url is not None
    headers: dict[str, str] = {}
    if target.auth_token is not None:
        # Twilio signs the stream URL as written in <Stream url>: always wss://.
        public = urlsplit(_public(target.media_url, target.public_url))
        signed = urlunsplit(public._replace(scheme="wss"))
        headers[SIGNATURE_HEADER] = sign(target.auth_token, signed, {})
    params = {
        "from": target.from_number,
        "to": target.to_number,
        "direction": "inbound",
        **(custom_parameters or {}),
    }
    return StreamPlan(target.media_url, headers, params)


def _answer(target: Target, response: httpx.Response) -> StreamPlan:
    if response.status_code == 403:
        raise DialFailed("webhook rejected the request (HTTP 403)", "webhook_rejected", 403)
    if response.status_code != 200:
        raise DialFailed(
            f"webhook answered HTTP {response.status_code}", "webhook_error", response.status_code
        )
    url, params = parse_stream_twiml(response.text)
    return stream_plan(target, url, params)


async def dial(
    client: httpx.AsyncClient,
    target: Target,
    call_sid: str,
    account_sid: str,
    custom_parameters: Mapping[str, str] | None = None,
) -> StreamPlan:
    """The webhook step (if the target is a webhook), then how to open the stream."""
    if target.webhook_url is None:
        return direct_plan(target, custom_parameters)
    url, form, headers = webhook_request(target, call_sid, account_sid, custom_parameters)
    try:
        response = await client.post(url, data=form, headers=headers, timeout=target.timeout_s)
    except httpx.TimeoutException as exc:
        raise DialFailed(f"webhook timed out: {exc!r}", "webhook_timeout") from exc
    except httpx.HTTPError as exc:
        raise DialFailed(f"webhook failed: {exc!r}", "webhook_error") from exc
    return _answer(target, response)


def dial_sync(
    client: httpx.Client,
    target: Target,
    call_sid: str,
    account_sid: str,
    custom_parameters: Mapping[str, str] | None = None,
) -> StreamPlan:
    """:func:`dial` for synchronous (gevent) callers."""
    if target.webhook_url is None:
        return direct_plan(target, custom_parameters)
    url, form, headers = webhook_request(target, call_sid, account_sid, custom_parameters)
    try:
        response = client.post(url, data=form, headers=headers, timeout=target.timeout_s)
    except httpx.TimeoutException as exc:
        raise DialFailed(f"webhook timed out: {exc!r}", "webhook_timeout") from exc
    except httpx.HTTPError as exc:
        raise DialFailed(f"webhook failed: {exc!r}", "webhook_error") from exc
    return _answer(target, response)
