"""``voice-agent knowledge index | search | list``: the knowledge base, for operators.

``index`` builds or updates the index ahead of a deploy (e.g. while building the image) with
the same code the server runs at startup; ``search`` tries a question the way a call would;
``list`` shows what is indexed. The settings are the server's (AGENT_KNOWLEDGE,
KNOWLEDGE_INDEX, KNOWLEDGE_EMBEDDINGS, model credentials); arguments override them.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import logging
import os
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from agent.config import KnowledgeSettings, read_knowledge
from agent.env import ConfigError, EnvReader
from agent.knowledge import KnowledgeError
from telephony.settings import VARIABLES, Settings

__all__ = ["main"]


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="voice-agent knowledge",
        description=(
            "The knowledge base the agent searches during calls (search_knowledge): "
            "build or update its index, try a question, list what is indexed."
        ),
        epilog=(
            "Settings: AGENT_KNOWLEDGE, KNOWLEDGE_INDEX, KNOWLEDGE_EMBEDDINGS (docs/knowledge.md)."
        ),
    )
    p.add_argument("--index", help="the index file (default: KNOWLEDGE_INDEX, else knowledge.db)")
    sub = p.add_subparsers(dest="action", required=True)
    index = sub.add_parser("index", help="index what changed since the last index")
    index.add_argument(
        "paths", nargs="*", help="folders or files (default: AGENT_KNOWLEDGE)", type=Path
    )
    index.add_argument(
        "--rebuild",
        action="store_true",
        help="start from an empty index (after changing KNOWLEDGE_EMBEDDINGS)",
    )
    search = sub.add_parser("search", help="search the index as a call would")
    search.add_argument("query", nargs="+", help="the question")
    search.add_argument("--json", action="store_true", help="print the tool's answer as JSON")
    listing = sub.add_parser("list", help="the indexed documents")
    listing.add_argument("--json", action="store_true", help="as JSON")
    return p


def _knowledge(args: argparse.Namespace, settings: Settings) -> KnowledgeSettings:
    paths = getattr(args, "paths", None) or None
    reading_only = args.action != "index"
    knowledge = settings.knowledge
    if paths is not None or knowledge is None:
        if knowledge is None and paths is None and not reading_only:
            raise KnowledgeError(
                "nothing to index: set AGENT_KNOWLEDGE or name the folders and files"
            )
        env = EnvReader(os.environ, VARIABLES)
        try:
            knowledge = read_knowledge(
                env, backend=settings.model.backend, paths=paths if paths else []
            )
        except ConfigError as exc:
            raise KnowledgeError(str(exc)) from None
        assert knowledge is not None
        for path in knowledge.paths:
            if not path.exists():
                raise KnowledgeError(f"{path} does not exist")
    if args.index:
        knowledge = dataclasses.replace(knowledge, index=Path(args.index).expanduser())
    return knowledge


@asynccontextmanager
async def _embedding_endpoint(
    settings: Settings, knowledge: KnowledgeSettings
) -> AsyncIterator[dict[str, Any]]:
    """Where the Gemini embedder goes: Google, or (as in the server) the simulator."""
    if knowledge.embeddings != "gemini" or settings.model.backend != "simulator":
        yield {}
        return
    from agent.simulator import LiveSimulator

    async with LiveSimulator() as sim:
        yield {
            "base_url": sim.base_url,
            "ssl_context": sim.client_ssl_context(),
            "api_key": "simulator",
        }


async def _index(args: argparse.Namespace, settings: Settings, knowledge: KnowledgeSettings) -> int:
    from agent.knowledge.search import describe
    from agent.knowledge.service import open_knowledge

    def warn(message: str) -> None:
        print(f"warning: {message}", file=sys.stderr)

    async with _embedding_endpoint(settings, knowledge) as endpoint:
        base, report = await open_knowledge(
            knowledge, settings.model, rebuild=args.rebuild, warn=warn, **endpoint
        )
    base.close()
    files = len(report.added) + len(report.updated) + report.unchanged
    print(
        f"{files} files: {len(report.added)} added, {len(report.updated)} updated, "
        f"{report.unchanged} unchanged, {len(report.removed)} removed, "
        f"{len(report.skipped)} skipped"
    )
    print(
        f"{report.chunks} passages in {describe(knowledge, base.embedder)}; "
        f"{report.embedded_chunks} embedded, {report.reused_vectors} vectors reused, "
        f"in {report.seconds:.2f} s"
    )
    if report.not_embedded:
        print(
            f"warning: {len(report.not_embedded)} files could not be embedded (keyword search "
            "only until the next index)",
            file=sys.stderr,
        )
    return 0


async def _open_existing(settings: Settings, knowledge: KnowledgeSettings, endpoint: Any) -> Any:
    from agent.knowledge.embed import gemini_client, make_embedder
    from agent.knowledge.index import NO_EMBEDDER, KnowledgeIndex
    from agent.knowledge.search import KnowledgeBase

    client = None
    if knowledge.embeddings == "gemini":
        client = gemini_client(settings.model, **endpoint)
    embedder = await asyncio.to_thread(make_embedder, knowledge, client)
    index = KnowledgeIndex.open(
        knowledge.index,
        embedder.id if embedder else NO_EMBEDDER,
        embedder.dim if embedder else 0,
        write=False,
        wanted=f"KNOWLEDGE_EMBEDDINGS={knowledge.embeddings}",
    )
    return KnowledgeBase(index, embedder, timeout_s=max(knowledge.search_timeout_s, 10.0))


async def _search(
    args: argparse.Namespace, settings: Settings, knowledge: KnowledgeSettings
) -> int:
    query = " ".join(args.query)
    async with _embedding_endpoint(settings, knowledge) as endpoint:
        base = await _open_existing(settings, knowledge, endpoint)
        try:
            result = await base.search(query)
        finally:
            base.close()
    response = result.response()
    if args.json:
        print(json.dumps({**response, "mode": result.mode, "ms": round(result.ms, 1)}, indent=2))
        return 0
    how = result.mode + (f" (degraded: {result.degraded})" if result.degraded else "")
    print(f"{response['result']} in {result.ms:.1f} ms, {how}")
    for n, passage in enumerate(response.get("passages", []), start=1):
        where = passage["source"] + (f" > {passage['section']}" if "section" in passage else "")
        print(f"{n}. {where}\n   {passage['text']}")
    return 0


def _list(args: argparse.Namespace, knowledge: KnowledgeSettings) -> int:
    from agent.knowledge.index import KnowledgeIndex

    if not knowledge.index.exists():
        raise KnowledgeError(f"no knowledge index at {knowledge.index}")
    # Listing needs no embedder: open with what the index says it holds.
    probe = KnowledgeIndex(knowledge.index, "", 0, writable=False)
    try:
        meta = probe.meta()
        docs = probe.documents()
    finally:
        probe.close()
    if args.json:
        print(json.dumps({"meta": meta, "documents": [dataclasses.asdict(d) for d in docs]}))
        return 0
    print(
        f"{knowledge.index}: {meta.get('embedder')} ({meta.get('dim')} dimensions), "
        f"{len(docs)} documents, {sum(d.chunks for d in docs)} passages"
    )
    for d in docs:
        when = time.strftime("%Y-%m-%d %H:%M", time.localtime(d.indexed_at))
        flags = "" if d.embedded or meta.get("embedder") == "off" else "  [keywords only]"
        note = f"  ({d.warning})" if d.warning else ""
        print(f"  {d.source:40} {d.kind:8} {d.chunks:5} passages  {when}{flags}{note}")
    return 0


def main(argv: list[str]) -> int:
    from telephony.cli import load_settings

    args = _parser().parse_args(argv)
    settings = load_settings()
    # Warnings reach the operator as lines of their own (``warn``), not as log records.
    logging.basicConfig(level=logging.ERROR, format="%(name)s: %(message)s")
    try:
        knowledge = _knowledge(args, settings)
        if args.action == "index":
            return asyncio.run(_index(args, settings, knowledge))
        if args.action == "search":
            return asyncio.run(_search(args, settings, knowledge))
        return _list(args, knowledge)
    except KnowledgeError as exc:
        print(f"voice-agent: {exc}", file=sys.stderr)
        return 2
