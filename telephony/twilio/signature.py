"""Twilio request signatures (``X-Twilio-Signature``), checked and made with the twilio SDK.

Twilio signs the webhook POST over the public ``https://`` URL plus the form parameters, and
the Media Stream WebSocket upgrade over the ``wss://`` URL exactly as written in
``<Stream url>``, with no parameters. Behind a proxy the app sees ``http``/``ws`` and an
internal host, so validation always uses the configured public URL, never the request's.
"""

from __future__ import annotations

from collections.abc import Mapping

from twilio.request_validator import RequestValidator

SIGNATURE_HEADER = "X-Twilio-Signature"


def is_valid(auth_token: str, url: str, params: Mapping[str, str], signature: str | None) -> bool:
    """True when ``signature`` is Twilio's signature of ``url`` + ``params``."""
    if not signature:
        return False
    return bool(RequestValidator(auth_token).validate(url, dict(params), signature))


def sign(auth_token: str, url: str, params: Mapping[str, str] | None = None) -> str:
    """The signature Twilio would send for ``url`` + ``params`` (simulators and tests)."""
    return str(RequestValidator(auth_token).compute_signature(url, dict(params or {})))
