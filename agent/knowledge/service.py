"""Opening the knowledge base for a process (the server at startup, the CLI): the embedder
the settings name, with the model's credentials, and the index brought up to date."""

from __future__ import annotations

import asyncio
import importlib
import ssl
from collections.abc import Callable

from agent.config import KnowledgeSettings, ModelAccess
from agent.knowledge import KnowledgeError, MissingExtra
from agent.knowledge.embed import embedder_identity, gemini_client, make_embedder
from agent.knowledge.index import IndexReport, KnowledgeIndex
from agent.knowledge.search import KnowledgeBase
from agent.knowledge.sources import DEFAULT_LIMITS, Limits

__all__ = ["check", "open_knowledge"]


def check(settings: KnowledgeSettings) -> None:
    """Before anything starts: the extra is installed and an existing index was built with
    the configured embedder (``KnowledgeError`` with a one-line message otherwise)."""
    modules = ["apsw", "sqlite_vec", "pypdf"]
    if settings.embeddings == "local":
        modules.append("wordllama")
    for module in modules:
        try:
            importlib.import_module(module)
        except ModuleNotFoundError:
            raise MissingExtra(module) from None
    if settings.index.exists():
        embedder_id, dim = embedder_identity(settings)
        index = KnowledgeIndex.open(
            settings.index,
            embedder_id,
            dim,
            write=False,
            wanted=f"KNOWLEDGE_EMBEDDINGS={settings.embeddings}",
        )
        index.close()


async def open_knowledge(
    settings: KnowledgeSettings,
    access: ModelAccess,
    *,
    base_url: str | None = None,
    ssl_context: ssl.SSLContext | None = None,
    api_key: str | None = None,
    rebuild: bool = False,
    limits: Limits = DEFAULT_LIMITS,
    warn: Callable[[str], None] | None = None,
) -> tuple[KnowledgeBase, IndexReport]:
    """The knowledge base, updated from its files. ``base_url``/``ssl_context``/``api_key``:
    where the Gemini embedder goes when it is not Google's (the embedded simulator)."""
    client = None
    if settings.embeddings == "gemini":
        if access.backend == "simulator" and base_url is None:
            raise KnowledgeError(
                "KNOWLEDGE_EMBEDDINGS=gemini with the simulator needs the simulator's address"
            )
        client = gemini_client(access, base_url=base_url, ssl_context=ssl_context, api_key=api_key)
    # Loading wordllama reads 16 MB of weights (~0.7 s): not on the event loop.
    embedder = await asyncio.to_thread(make_embedder, settings, client)
    return await KnowledgeBase.open(settings, embedder, limits=limits, rebuild=rebuild, warn=warn)
