"""After the call: what the operator keeps and reads.

- ``records``: a call's record, built from its summary (pure);
- ``store``: the record database (SQLAlchemy) and the writer that never blocks a call;
- ``api``: the operator's HTTP API and page (``/calls``, ``/ui``);
- ``cli``: ``voice-agent calls`` and ``voice-agent dial``;
- ``pii``: masking phone numbers in records and logs.
"""
