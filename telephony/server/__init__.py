"""The process edge: the HTTP/WebSocket app, its process-wide service, running it.

- ``app``: the FastAPI routes Twilio talks to, and the service's lifespan;
- ``service``: ``Service``, the state shared by the calls of one process;
- ``runner``: uvicorn with a drain on SIGTERM, and in-process for tests and benchmarks;
- ``serve``: ``voice-agent serve`` (preflight checks, then the runner);
- ``config_cli``: ``voice-agent config``;
- ``metrics``: Prometheus metrics, recorded from call summaries;
- ``logs``: one line per event, JSON or text, with the call SID.
"""
