"""Answers the runtime writes from tool results: sentences of the passages with their
numbers, the sources they came from, or that the documents do not say."""

from __future__ import annotations

import orjson

from agent_server.runtime.grounded import (
    DONT_KNOW,
    calculation_answer,
    knowledge_answer,
    small_talk_reply,
    time_answer,
)

ADDING = (
    "From the command line, with the server stopped:\n\n```bash\n"
    ".venv/bin/citadel ingest docs/ notes.pdf\n```\n\n"
    "Supported files are plain text, Markdown, HTML and PDF. Each file is chunked."
)
HEALTH = "| route | answers |\n|---|---|\n| `GET /ready` | 200 when this worker can serve a run |"


def result(*hits: tuple[str, str, str]) -> str:
    return orjson.dumps(
        {
            "query": "q",
            "hits": [
                {"source": source, "title": title, "snippet": text, "score": 0.5}
                for source, title, text in hits
            ],
        }
    ).decode()


async def test_the_sentence_holding_the_questions_words_answers_with_its_passage_number():
    found = result(
        ("docs/health.md", "Operations", HEALTH),
        ("docs/knowledge-base.md", "Knowledge base", ADDING),
    )
    answer = await knowledge_answer("Which files are supported?", found, None)
    body, sources = answer.split("\n\nSources:\n")
    assert body == "Supported files are plain text, Markdown, HTML and PDF. [2]"
    assert sources == "[2] Knowledge base (docs/knowledge-base.md)"


async def test_a_command_in_a_code_block_answers_with_the_sentence_that_introduces_it():
    found = result(("docs/knowledge-base.md", "Knowledge base", ADDING))
    answer = await knowledge_answer("From the command line, how do I ingest?", found, None)
    assert answer.startswith(
        "From the command line, with the server stopped: "
        "`.venv/bin/citadel ingest docs/ notes.pdf` [1]"
    )


async def test_a_table_row_answers_without_its_header():
    found = result(("docs/operations.md", "Operations", HEALTH))
    answer = await knowledge_answer("When is GET /ready 200?", found, None)
    assert answer.startswith("`GET /ready`: 200 when this worker can serve a run. [1]")


async def test_passages_that_do_not_hold_the_question_say_so():
    found = result(("docs/knowledge-base.md", "Knowledge base", ADDING))
    assert await knowledge_answer("What is the capital of Mongolia?", found, None) == DONT_KNOW


async def test_no_hits_say_so():
    assert await knowledge_answer("Anything?", result(), None) == DONT_KNOW


async def test_a_failed_search_is_said_as_such():
    failed = '{"error":"retrieval_unavailable: the embedder is down"}'
    answer = await knowledge_answer("Anything?", failed, None)
    assert answer == (
        "I could not search the knowledge base: retrieval_unavailable: the embedder is down."
    )


async def test_meaning_breaks_a_tie_of_words():
    found = result(
        ("a.md", "A", "The server keeps runs going after a disconnect."),
        ("b.md", "B", "The server keeps threads in Postgres tables."),
    )

    async def closer_to_b(question: str, texts: list[str]) -> list[float]:
        return [0.3 if "Postgres" not in text else 0.6 for text in texts]

    answer = await knowledge_answer("Where does the server keep things?", found, closer_to_b)
    assert answer.startswith("The server keeps threads in Postgres tables. [2]")


def test_a_calculation_is_one_sentence_with_the_result():
    assert calculation_answer('{"expression":"17 * 23","result":391}') == "17 \u00d7 23 = 391."
    assert calculation_answer('{"expression":"(12.5 * 4) / 3","result":16.666666666666668}') == (
        "(12.5 \u00d7 4) / 3 = 16.666667."
    )
    assert calculation_answer('{"expression":"2 ** 10","result":1024}') == "2 ^ 10 = 1024."


def test_a_calculator_error_is_said():
    assert calculation_answer('{"error":"division by zero"}') == (
        "I could not work that out: division by zero."
    )


def test_the_time_is_one_sentence_in_the_asked_zone():
    clock = '{"timezone":"Asia/Tokyo","iso":"2026-12-07T08:48:00+09:00","weekday":"Monday"}'
    assert time_answer(clock) == "It is 08:48 on Monday, 7 December 2026 (Asia/Tokyo)."


def test_small_talk_is_answered_in_kind_with_what_the_assistant_can_do():
    assert small_talk_reply("greeting", "good morning!").startswith("Good morning! I answer")
    assert small_talk_reply("greeting", "hi").startswith("Hello! I answer")
    assert small_talk_reply("thanks", "thanks!") == "You're welcome!"
    assert "do arithmetic and tell the time" in small_talk_reply("identity", "who are you?")
