"""What of an answer is spoken: words yes; citation marks and the sources list no, however
the deltas split them."""

from __future__ import annotations

import pytest

from voice.spoken import SpokenText

ANSWER = (
    "Prune roses in late winter [1]. Water tomatoes twice a week [2].\n\n"
    "Sources:\n[1] Gardening (garden.md)\n[2] Watering (garden.md)"
)
SAID = "Prune roses in late winter. Water tomatoes twice a week."


def speak(deltas: list[str]) -> list[str]:
    spoken = SpokenText()
    return [spoken.feed(delta) for delta in deltas] + [spoken.end()]


@pytest.mark.parametrize("size", [1, 2, 3, 5, 8, 13, len(ANSWER)])
def test_citations_and_sources_are_not_spoken_however_the_answer_is_split(size):
    deltas = [ANSWER[i : i + size] for i in range(0, len(ANSWER), size)]
    assert "".join(speak(deltas)) == SAID


def test_words_are_spoken_as_they_come_not_held_to_the_end():
    parts = speak(["Prune roses ", "in late ", "winter."])
    assert parts[0] == "Prune roses" and parts[1] == " in late"


def test_nothing_is_spoken_after_the_sources_heading():
    spoken = SpokenText()
    spoken.feed("Done.\n\nSources:\n")
    assert spoken.feed("[1] more words") == "" and spoken.end() == ""


def test_brackets_that_are_not_citations_are_spoken():
    assert "".join(speak(["Use the [draft] ", "form."])) == "Use the [draft] form."
