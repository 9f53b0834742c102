"""X-Twilio-Signature: made and checked with the twilio SDK, against the public URL."""

from __future__ import annotations

import base64
import hashlib
import hmac

from telephony.twilio.signature import is_valid, sign

TOKEN = "12345678901234567890123456789012"
URL = "https://agent.example.com/twilio/voice"
PARAMS = {"CallSid": "CA" + "1" * 32, "From": "+14155550100", "To": "+14155550111"}


def reference_signature(token: str, url: str, params: dict[str, str]) -> str:
    # Twilio's documented algorithm: URL + sorted key/value pairs, HMAC-SHA1, base64.
    data = url + "".join(k + params[k] for k in sorted(params))
    return base64.b64encode(hmac.new(token.encode(), data.encode(), hashlib.sha1).digest()).decode()


def test_sign_matches_the_documented_algorithm() -> None:
    assert sign(TOKEN, URL, PARAMS) == reference_signature(TOKEN, URL, PARAMS)


def test_valid_signature() -> None:
    assert is_valid(TOKEN, URL, PARAMS, sign(TOKEN, URL, PARAMS))


def test_missing_or_invalid_signature() -> None:
    assert not is_valid(TOKEN, URL, PARAMS, None)
    assert not is_valid(TOKEN, URL, PARAMS, "")
    assert not is_valid(TOKEN, URL, PARAMS, "bm90IGEgc2lnbmF0dXJl")
    assert not is_valid("another-token", URL, PARAMS, sign(TOKEN, URL, PARAMS))


def test_tampered_params_fail() -> None:
    sig = sign(TOKEN, URL, PARAMS)
    assert not is_valid(TOKEN, URL, {**PARAMS, "From": "+19999999999"}, sig)


def test_wrong_url_fails() -> None:
    sig = sign(TOKEN, URL, PARAMS)
    assert not is_valid(TOKEN, "https://evil.example.com/twilio/voice", PARAMS, sig)
    # What the app sees behind a TLS-terminating proxy is not what Twilio signed.
    assert not is_valid(TOKEN, "http://agent.example.com/twilio/voice", PARAMS, sig)


def test_websocket_signature_is_over_the_wss_url_with_no_params() -> None:
    wss = "wss://agent.example.com/twilio/media"
    sig = sign(TOKEN, wss, {})
    assert sig == reference_signature(TOKEN, wss, {})
    assert is_valid(TOKEN, wss, {}, sig)
    assert not is_valid(TOKEN, "ws://agent.example.com/twilio/media", {}, sig)
