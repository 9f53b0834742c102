"""One call: a Twilio Media Stream joined to one conversation with the model.

- ``summary``: what happened (``CallSummary``, ``Turn``, ``Outcome``): pure data, read by the
  records and metrics without importing the bridge or the SDK;
- ``heard``: what of the agent's speech the caller has heard, from Twilio's mark echoes;
- ``turns``: the turn log (what each side said, when, and what was cut off);
- ``answer``: outbound calls: has a person answered?
- ``state``: the call's lifecycle as an explicit state machine;
- ``bridge``: ``Call``, the per-call orchestrator that joins them;
- ``recorder``: ``RECORD_CALLS``: both legs and the events, written at the end.
"""
