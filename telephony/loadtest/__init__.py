"""Load-testing the agent by replaying recorded calls (``voice-agent loadtest``).

Modules, each one concept:

- :mod:`~telephony.loadtest.scenario`: recordings → what each call says and how (turns,
  barge-in, realtime), shared by every driver;
- :mod:`~telephony.loadtest.target`: where calls go (Media Stream URL, or the voice webhook
  as Twilio does it, signed);
- :mod:`~telephony.loadtest.metrics`: per-call measures, percentiles, summary, SLOs (pure);
- :mod:`~telephony.loadtest.runner`: the asyncio load generator (one machine);
- :mod:`~telephony.loadtest.locust_user`: a Locust ``User`` for distributed load (imports
  Locust, which monkey-patches the process: never import it from asyncio code);
- :mod:`~telephony.loadtest.report`: CSV/JSONL/JSON and the HTML page;
- :mod:`~telephony.loadtest.cli`: ``voice-agent loadtest``.

The caller itself (Twilio's wire format, playback emulation, turn-taking) is
:mod:`telephony.caller`, the same core ``voice-agent call`` uses; the Locust user drives it
synchronously (:mod:`telephony.caller.drive_sync`).
"""
