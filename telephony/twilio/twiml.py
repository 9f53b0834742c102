"""TwiML documents the service returns, built with the twilio SDK (pure functions).

The call flow: ``/twilio/voice`` answers with ``<Connect action=…><Stream url=…>``. While the
stream is open, ``<Connect>`` blocks; when it closes, Twilio asks the ``action`` URL what to do
next, and the answer depends on how the call went (``after_stream``): hang up after a normal
end, apologise (and transfer, if configured) after a failure, dial the transfer number after a
transfer request.
"""

from __future__ import annotations

from collections.abc import Mapping

from twilio.twiml.voice_response import Connect, Dial, VoiceResponse


def connect_stream(stream_url: str, action_url: str, parameters: Mapping[str, str]) -> str:
    """Connect the call to our Media Stream; ``parameters`` reach ``start.customParameters``."""
    if "?" in stream_url:
        # Twilio fails the handshake (error 31920) on a query string: use <Parameter>s.
        raise ValueError("a <Stream> url must not carry a query string")
    response = VoiceResponse()
    connect = Connect(action=action_url, method="POST")
    stream = connect.stream(url=stream_url)
    for name, value in parameters.items():
        # Twilio limits name + value to 500 characters.
        stream.parameter(name=name, value=value[: max(0, 499 - len(name))])
    response.append(connect)
    return str(response)


def say_and_hang_up(message: str, language: str | None = None) -> str:
    """Tell the caller something, then hang up (busy, unavailable)."""
    response = VoiceResponse()
    response.say(message, language=language)
    response.hangup()
    return str(response)


def hang_up() -> str:
    response = VoiceResponse()
    response.hangup()
    return str(response)


def dial(number: str, message: str | None = None, language: str | None = None) -> str:
    """Transfer the caller to ``number`` (optionally after a spoken message)."""
    response = VoiceResponse()
    if message:
        response.say(message, language=language)
    dial_verb = Dial()
    dial_verb.number(number)
    response.append(dial_verb)
    return str(response)


def after_stream(
    outcome: str | None,
    *,
    unavailable_message: str,
    transfer_number: str | None,
    transfer_message: str = "Sorry, our assistant is unavailable. Please hold for a colleague.",
    language: str | None = None,
) -> str:
    """What Twilio should do once the stream has ended, given the call's outcome.

    ``outcome`` is one of ``telephony.call.Outcome``'s values, or None when the call is
    unknown here (e.g. another instance served it, or this one restarted): then we hang up
    rather than guess.
    """
    if outcome == "failed":
        if transfer_number:
            return dial(transfer_number, transfer_message, language)
        return say_and_hang_up(unavailable_message, language)
    if outcome == "transfer" and transfer_number:
        return dial(transfer_number)
    return hang_up()
