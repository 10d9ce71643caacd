"""Guided routing: which tool answers a message, with what arguments, from the user's words."""

from __future__ import annotations

import pytest

from agent_server.runtime.routing import PASSAGES, arithmetic, is_follow_up, route, time_zone

TOOLS = {"calculate", "get_current_time", "search_knowledge_base"}
SEARCH = "search_knowledge_base"


def user(text: str) -> dict:
    return {"id": f"u{len(text)}", "role": "user", "content": text}


def calculated(expression: str, result: float) -> list[dict]:
    """A calculate call and its result, as the transcript holds them."""
    call = {"id": "c1", "type": "function", "function": {"name": "calculate", "arguments": "{}"}}
    return [
        {"id": "a1", "role": "assistant", "toolCalls": [call]},
        {
            "id": "t1",
            "role": "tool",
            "toolCallId": "c1",
            "content": f'{{"expression":"{expression}","result":{result}}}',
        },
        {"id": "a2", "role": "assistant", "content": f"{expression} = {result}."},
    ]


@pytest.mark.parametrize(
    ("question", "expression"),
    [
        ("What is 17 * 23?", "17 * 23"),
        ("what's 12 plus 30?", "12 + 30"),
        ("Calculate (12.5 * 4) / 3", "(12.5 * 4) / 3"),
        ("What is 2 to the power of 10?", "2 ** 10"),
        ("What is the square root of 144?", "sqrt(144)"),
        ("How much is 1,250 divided by 5?", "1250 / 5"),
        ("what is 100 minus 37", "100 - 37"),
        ("What is 15% of 80?", "15 / 100 * 80"),
        ("7 times 8?", "7 * 8"),
        ("What is 3 squared?", "3 ** 2"),
        ("What is 2x3?", "2 * 3"),
    ],
)
def test_the_expression_is_taken_from_the_users_words(question, expression):
    assert arithmetic(question) == expression


@pytest.mark.parametrize(
    "question",
    [
        "How do I add documents to the knowledge base?",
        "How many messages can one RunAgentInput carry?",
        "How do I run 2 workers - 1 on each host?",
        "what changed in 1.0-2",
        "In 2024 what changed?",
        "hello",
    ],
)
def test_numbers_inside_other_questions_are_not_arithmetic(question):
    assert arithmetic(question) is None


@pytest.mark.parametrize(
    ("question", "expression"),
    [
        ("And what is that times 2?", "391 * 2"),
        ("divide it by 7", "391 / 7"),
        ("double it", "391 * 2"),
        ("add 9", "391 + 9"),
        ("and minus 4?", "391 - 4"),
    ],
)
def test_a_follow_up_works_on_the_previous_result(question, expression):
    assert arithmetic(question, previous="391") == expression


def test_a_follow_up_routes_to_calculate_with_the_last_result_in_the_transcript():
    messages = [user("What is 17 * 23?"), *calculated("17 * 23", 391), user("And times 2?")]
    found = route(messages, TOOLS, SEARCH)
    assert (found.intent, found.tool, found.arguments) == (
        "arithmetic",
        "calculate",
        {"expression": "391 * 2"},
    )


@pytest.mark.parametrize(
    "greeting", ["hello", "Hi there!", "good morning", "thanks!", "how are you?", "who are you?"]
)
def test_greetings_call_no_tool(greeting):
    found = route([user(greeting)], TOOLS, SEARCH)
    assert (found.intent, found.tool) == ("chat", None) and found.small_talk is not None


def test_a_greeting_with_a_question_is_a_question():
    found = route([user("hello, how do I add documents?")], TOOLS, SEARCH)
    assert found.tool == SEARCH


@pytest.mark.parametrize(
    ("question", "arguments"),
    [
        ("What time is it?", {}),
        ("What's the date today?", {}),
        ("What time is it in Tokyo?", {"timezone": "Asia/Tokyo"}),
        ("what's the time in new york", {"timezone": "America/New_York"}),
    ],
)
def test_time_questions_call_the_clock_with_the_named_zone(question, arguments):
    found = route([user(question)], TOOLS, SEARCH)
    assert (found.tool, found.arguments) == ("get_current_time", arguments)


def test_an_unknown_place_gives_no_zone():
    assert time_zone("What time is it in Atlantis?") is None


def test_other_questions_search_the_knowledge_base_with_the_users_words():
    found = route([user("Which file types can I add?")], TOOLS, SEARCH)
    assert (found.tool, found.arguments) == (
        SEARCH,
        {"query": "Which file types can I add?", "top_k": PASSAGES},
    )


def test_a_short_follow_up_searches_with_the_previous_question():
    messages = [
        user("How do I add documents to the knowledge base?"),
        {"id": "a", "role": "assistant", "content": "With citadel ingest."},
        user("Which file types does it accept?"),
    ]
    found = route(messages, TOOLS, SEARCH)
    assert found.arguments == {
        "query": "How do I add documents to the knowledge base? Which file types does it accept?",
        "top_k": PASSAGES,
    }


def test_a_new_question_is_not_a_follow_up():
    assert not is_follow_up("How do I apply database migrations by hand?")


def test_without_the_tool_a_question_goes_to_the_model():
    assert route([user("What is 17 * 23?")], {"get_current_time"}, SEARCH).intent == "chat"
    assert route([user("What time is it?")], set(), SEARCH).intent == "chat"
