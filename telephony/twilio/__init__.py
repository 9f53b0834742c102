"""The Twilio peer: what crosses the wire between Twilio and us, with no I/O of our own.

- ``media_stream``: the Media Streams messages, parsed and built (pure);
- ``twiml``: the TwiML we answer webhooks with;
- ``signature``: ``X-Twilio-Signature``, checked and made;
- ``playback``: Twilio's playback buffer, emulated (pure; the caller simulator plays it);
- ``rest``: the REST calls we make (hang up, transfer, place a call).

A second carrier (Telnyx, Plivo, SIP) would get a package beside this one.
"""
