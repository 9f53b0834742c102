"""The pure parts of searching: query words, reciprocal-rank fusion, the bounded answer."""

from __future__ import annotations

from agent.knowledge.index import Passage
from agent.knowledge.search import MAX_ANSWER_CHARS, RRF_K, answer, fts_query, rrf, terms


def test_terms_drop_function_words_and_repeats() -> None:
    assert terms("Where can I park my car? Where's the car park?") == ["park", "car", "wheres"]
    assert terms("What is it?") == []
    assert fts_query([]) is None
    assert fts_query(["park", 'ca"r']) == '"park" OR "car"'


def test_rrf_rewards_agreement_between_rankings() -> None:
    lexical = [1, 2, 3]
    vector = [3, 4, 1]
    fused = rrf([lexical, vector])
    assert [i for i, _ in fused] == [1, 3, 2, 4]
    top_score = fused[0][1]
    assert top_score == 1 / (RRF_K + 1) + 1 / (RRF_K + 3)
    # Weights tilt it; an empty ranking changes nothing.
    assert next(i for i, _ in rrf([lexical, vector], weights=[1.0, 3.0])) == 3
    assert rrf([lexical, []]) == rrf([lexical])


def test_rrf_ties_go_to_the_best_single_rank() -> None:
    # Equal sums are broken by the best single rank, then by id.
    fused = rrf([[5, 6], [6, 5]])
    assert [i for i, _ in fused] == [5, 6]  # same score, same best rank: lower id first


def _passage(n: int, text: str, heading: str = "Section") -> Passage:
    return Passage(n, f"doc{n}.md", heading, text)


def test_answer_carries_sources_and_is_bounded() -> None:
    long = "This sentence is about billing. " * 40  # ~1,300 characters
    response = answer([_passage(1, long), _passage(2, long), _passage(3, "Short.", "")])
    assert response["result"] == "ok"
    passages = response["passages"]
    assert passages[0]["source"] == "doc1.md" and passages[0]["section"] == "Section"
    total = sum(len(p["text"]) for p in passages)
    assert total <= MAX_ANSWER_CHARS
    assert len(passages) == 2 and passages[1]["text"].endswith("billing.…")  # at a sentence end
    assert "note" in response


def test_a_passage_without_heading_has_no_section() -> None:
    [item] = answer([_passage(1, "Open 9 to 5.", "")])["passages"]
    assert item == {"source": "doc1.md", "text": "Open 9 to 5."}


def test_nothing_found_is_an_informative_no_results() -> None:
    response = answer([])
    assert response["result"] == "no_results"
    assert "will not help" in response["note"]
