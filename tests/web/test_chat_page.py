"""The chat page in Chromium: CopilotKit's own <CopilotChat> (react-core 1.74) talking to the
server's /api/copilotkit surface with no Node tier. The model is the scripted Ollama TEST
DOUBLE, so each test says what the model answers and checks what the page and the server
make of it."""

from __future__ import annotations

import asyncio
import re

import httpx
from playwright.async_api import Page, expect

from tests.doubles.ollama import OllamaDouble, ScriptedReply, text_reply, tool_call_reply
from tests.server.test_agui_knowledge import ingest
from tests.support.waiting import PATIENCE
from tests.web.conftest import WebServer

TIMEOUT = PATIENCE * 1000  # Playwright counts milliseconds

GARDEN = {
    "name": "handbook/garden.md",
    "text": "# Garden\n\n## Pruning roses\nPrune roses in late winter, just above an outward "
    "facing bud, and remove dead wood first.",
}


async def open_chat(page: Page, path: str = "/chat") -> None:
    """Open a chat page and wait until CopilotKit has connected to its thread (a message
    sent before would race the connect's replay)."""
    async with page.expect_response(
        lambda response: response.url.endswith("/connect"), timeout=TIMEOUT
    ):
        await page.goto(path)
    await expect(page.get_by_test_id("copilot-chat-textarea")).to_be_visible(timeout=TIMEOUT)


async def open_new_chat(page: Page) -> str:
    """Open /chat (a new thread) and return the thread id the URL names."""
    await open_chat(page)
    await page.wait_for_url(re.compile(r"/chat/thread_[0-9a-f]+$"), timeout=TIMEOUT)
    return page.url.rsplit("/", 1)[1]


async def send(page: Page, text: str) -> None:
    await page.get_by_test_id("copilot-chat-textarea").fill(text)
    await page.get_by_test_id("copilot-send-button").click()


async def idle(page: Page) -> None:
    chat = page.get_by_test_id("copilot-chat")
    await expect(chat).to_have_attribute("data-copilot-running", "false", timeout=TIMEOUT)


def assistant(page: Page):
    return page.get_by_test_id("copilot-assistant-message")


async def answered_chat(page: Page, ollama: OllamaDouble, question: str, answer: str) -> str:
    """A new chat on ``page`` whose ``question`` the model answers ``answer``, shown and
    run to its end; the thread id."""
    ollama.enqueue(ScriptedReply(text_reply(answer)))
    thread_id = await open_new_chat(page)
    await send(page, question)
    await expect(assistant(page).last).to_contain_text(answer, timeout=TIMEOUT)
    await idle(page)
    return thread_id


async def stored_thread(web: WebServer, thread_id: str) -> dict:
    async with httpx.AsyncClient(base_url=web.url) as client:
        response = await client.get(f"/threads/{thread_id}")
        assert response.status_code == 200, response.text
        return response.json()


async def test_chat_streams_the_answer_and_stores_the_thread(page: Page, web: WebServer):
    failed: list[str] = []  # every request of the page succeeds: nothing missing, no CDN
    page.on("requestfailed", lambda request: failed.append(f"failed {request.url}"))
    page.on(
        "response",
        lambda response: (
            failed.append(f"{response.status} {response.url}") if response.status >= 400 else None
        ),
    )
    web.ollama.enqueue(ScriptedReply(text_reply("Hello from Citadel, in your browser.")))
    thread_id = await open_new_chat(page)
    await send(page, "Hello?")
    await expect(assistant(page).last).to_contain_text(
        "Hello from Citadel, in your browser.", timeout=TIMEOUT
    )
    await idle(page)
    thread = await stored_thread(web, thread_id)
    assert [(m["role"], m["content"]) for m in thread["messages"]] == [
        ("user", "Hello?"),
        ("assistant", "Hello from Citadel, in your browser."),
    ]
    await expect(page.get_by_test_id("thread").filter(has_text="Hello?")).to_be_visible()
    assert failed == []


async def test_reload_restores_the_thread_through_connect(page: Page, web: WebServer):
    answer = "Remember me after a reload."
    thread_id = await answered_chat(page, web.ollama, "Will you remember?", answer)
    await page.reload()
    assert page.url.endswith(f"/chat/{thread_id}")
    await expect(assistant(page).last).to_contain_text(
        "Remember me after a reload.", timeout=TIMEOUT
    )
    await expect(page.get_by_test_id("copilot-user-message").first).to_contain_text(
        "Will you remember?"
    )


async def test_a_knowledge_base_search_renders_its_sources(page: Page, web: WebServer):
    await ingest(web.url, [GARDEN])
    web.ollama.enqueue(
        ScriptedReply(tool_call_reply([("search_knowledge_base", {"query": "pruning roses"})])),
        ScriptedReply(text_reply("Prune roses in late winter [1].")),
    )
    await open_new_chat(page)
    await send(page, "When do I prune roses?")
    sources = page.get_by_test_id("sources")
    await expect(sources.get_by_test_id("source").first).to_contain_text(
        "handbook/garden.md", timeout=TIMEOUT
    )
    await expect(sources.first).to_contain_text("[1]")
    await expect(assistant(page).last).to_contain_text("late winter [1]", timeout=TIMEOUT)
    # The same sources, from the thread's shared state.
    await expect(page.get_by_test_id("state-sources")).to_contain_text("handbook/garden.md")


async def test_a_frontend_tool_runs_in_the_page_and_the_follow_up_run_answers(
    page: Page, web: WebServer
):
    web.ollama.enqueue(
        ScriptedReply(tool_call_reply([("show_notice", {"text": "Water the roses at six."})])),
        ScriptedReply(text_reply("I put the reminder on your screen.")),
    )
    thread_id = await open_new_chat(page)
    await send(page, "Remind me to water the roses at six.")
    await expect(page.get_by_test_id("notice")).to_have_text(
        "Water the roses at six.", timeout=TIMEOUT
    )
    await expect(assistant(page).last).to_contain_text(
        "I put the reminder on your screen.", timeout=TIMEOUT
    )
    await idle(page)
    follow_up = web.ollama.requests[1]["messages"]
    tool_message = next(m for m in follow_up if m["role"] == "tool")
    assert "Water the roses at six." in tool_message["content"]
    roles = [m["role"] for m in (await stored_thread(web, thread_id))["messages"]]
    assert roles == ["user", "assistant", "tool", "assistant"]


async def test_approving_an_addition_runs_it_and_declining_does_not(page: Page, web: WebServer):
    note = {"text": "The gate code is 4321.", "title": "Gate code"}
    web.ollama.enqueue(
        ScriptedReply(tool_call_reply([("add_to_knowledge_base", note)])),
        ScriptedReply(text_reply("Saved it.")),
        ScriptedReply(tool_call_reply([("add_to_knowledge_base", {**note, "title": "Again"})])),
        ScriptedReply(text_reply("I did not save it.")),
    )
    thread_id = await open_new_chat(page)
    await send(page, "Remember the gate code 4321.")
    approval = page.get_by_test_id("approval")
    await expect(approval).to_contain_text("add_to_knowledge_base", timeout=TIMEOUT)
    await approval.get_by_test_id("approve").click()
    await expect(assistant(page).last).to_contain_text("Saved it.", timeout=TIMEOUT)
    await idle(page)

    await send(page, "Save it again.")
    await expect(approval).to_contain_text("add_to_knowledge_base", timeout=TIMEOUT)
    await approval.get_by_test_id("decline").click()
    await expect(assistant(page).last).to_contain_text("I did not save it.", timeout=TIMEOUT)
    await idle(page)

    async with httpx.AsyncClient(base_url=web.url) as client:
        documents = (await client.get("/rag/documents")).json()["documents"]
    added = [d for d in documents if d["source"].startswith(f"chat/{thread_id}/")]
    assert len(added) == 1  # the approved one; the declined one was never run


async def test_stop_ends_the_run_and_the_page_stops_showing_it_running(page: Page, web: WebServer):
    never = asyncio.Event()  # the model stops after its first words, until the run is stopped
    web.ollama.enqueue(ScriptedReply(text_reply("This answer never ends"), holds={1: never}))
    thread_id = await open_new_chat(page)
    await send(page, "Talk forever.")
    await expect(assistant(page).last).to_contain_text("This an", timeout=TIMEOUT)
    chat = page.get_by_test_id("copilot-chat")
    await expect(chat).to_have_attribute("data-copilot-running", "true")
    await page.get_by_test_id("copilot-send-button").click()  # the stop button while running
    await idle(page)
    await web.ollama.wait_for_disconnects(1)  # the model's work was cancelled
    async with httpx.AsyncClient(base_url=web.url) as client:
        runs = (await client.get("/admin/runs", params={"thread": thread_id})).json()["runs"]
    assert [run["status"] for run in runs] == ["cancelled"]


async def test_the_thread_list_renames_and_deletes_threads(page: Page, web: WebServer):
    thread_id = await answered_chat(page, web.ollama, "Plant tulips in October.", "Noted.")
    listed = page.get_by_test_id("thread").filter(has_text="Plant tulips in October.")

    page.once("dialog", lambda dialog: dialog.accept("Tulips"))
    await listed.get_by_role("button", name="Rename").click()
    await expect(page.get_by_test_id("thread").filter(has_text="Tulips")).to_be_visible()
    assert (await stored_thread(web, thread_id))["title"] == "Tulips"

    await (
        page.get_by_test_id("thread")
        .filter(has_text="Tulips")
        .get_by_role("button", name="Delete")
        .click()
    )
    # The deleted thread's page gives way to a new chat.
    await expect(page).not_to_have_url(re.compile(thread_id), timeout=TIMEOUT)
    await expect(page).to_have_url(re.compile(r"/chat/thread_[0-9a-f]+$"))
    await expect(page.get_by_test_id("thread").filter(has_text="Tulips")).to_have_count(0)
    async with httpx.AsyncClient(base_url=web.url) as client:
        assert (await client.get(f"/threads/{thread_id}")).status_code == 404


async def test_a_failed_run_is_shown_to_the_user(page: Page, web: WebServer):
    web.ollama.enqueue(ScriptedReply(status=503))
    await open_new_chat(page)
    await send(page, "Are you there?")
    banner = page.get_by_test_id("chat-error")
    await expect(banner).to_contain_text("model_unavailable", timeout=TIMEOUT)
    await idle(page)
