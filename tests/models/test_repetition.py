"""The repetition guard: what it lets through of a looping answer, and of one that is not."""

from __future__ import annotations

from agent_server.models.repetition import RepetitionGuard
from bench.answer_quality import is_degenerate


def guarded(pieces: list[str]) -> tuple[str, bool]:
    guard = RepetitionGuard()
    sent = "".join(guard.feed(piece) for piece in pieces) + guard.flush()
    return sent, guard.looping


def test_a_loop_ends_before_a_run_of_words_comes_a_third_time():
    loop = "The AG-UI protocol is a lightweight, lightweight, lightweight protocol. " * 6
    sent, looping = guarded([loop[i : i + 3] for i in range(0, len(loop), 3)])  # token-sized
    assert looping
    assert loop.startswith(sent)
    assert not is_degenerate(sent)
    assert sent.count("The AG-UI protocol is") == 2


def test_an_answer_without_a_loop_passes_whole():
    text = "Hello! I can search the documents, do arithmetic and tell the time. Ask away."
    sent, looping = guarded([text[i : i + 2] for i in range(0, len(text), 2)])
    assert (sent, looping) == (text, False)


def test_a_phrase_said_twice_is_not_a_loop():
    text = "Set the URL. Then set the URL again and restart."
    assert guarded([text]) == (text, False)


def test_punctuation_and_case_do_not_hide_a_loop():
    sent, looping = guarded(["Go on. go on! GO ON, go on? " * 2])
    assert looping and not is_degenerate(sent)
