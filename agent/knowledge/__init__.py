"""What the agent can look up during a call: the operator's documents, searched by meaning and
by keyword (``search_knowledge``).

- ``documents``: pure: files (Markdown, text, HTML, PDF) → blocks → chunks that know their
  heading path;
- ``sources``: which files, within the limits on untrusted input;
- ``embed``: the embedders (Gemini through the SDK, bundled wordllama, none);
- ``index``: the one SQLite file (FTS5 for BM25, sqlite-vec for vectors) and its updates by
  content hash;
- ``search``: reciprocal-rank fusion and the bounded answer (pure), and ``KnowledgeBase``,
  which searches and degrades to keywords when the embedder fails;
- ``tool``: the function declaration and the async answer to one tool call;
- ``service``: opening it for a process (the server at startup; ``voice-agent knowledge
  index|search|list``, in ``telephony.server.knowledge_cli``).

Importing this package (and ``tool``, ``documents``) needs no optional dependency; the index
and the embedders need the ``knowledge`` extra, and say so in one line when it is missing.
"""

from __future__ import annotations

from agent.events import AgentError

__all__ = ["EXTRA_HINT", "KnowledgeError", "MissingExtra"]

#: What to install when the ``knowledge`` extra is missing.
EXTRA_HINT = "pip install 'gemini-phone-agent[knowledge]'"


class KnowledgeError(AgentError):
    """The knowledge base cannot be built or opened (the message is one line for operators)."""

    def __init__(self, message: str) -> None:
        super().__init__(message, retryable=False)


class MissingExtra(KnowledgeError):
    """An optional dependency of the knowledge base is not installed."""

    def __init__(self, module: str) -> None:
        super().__init__(f"the knowledge base needs {module}, which is not installed: {EXTRA_HINT}")
        self.module = module
