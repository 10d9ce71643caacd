"""The admin monitor in real Chromium against a real server (Postgres, the in-process bus)
whose model is the Ollama TEST DOUBLE. While the page watches, runs are made by another
user: in a second browser on the chat page, or POSTing to /agui as an AG-UI client does."""

from __future__ import annotations

import re
import uuid
from typing import Any

import httpx
from playwright.async_api import Browser, Locator, Page, expect

from tests.doubles.ollama import ScriptedReply, text_reply
from tests.support.agui import stream
from tests.support.browser import screenshot
from tests.support.waiting import PATIENCE
from tests.web.conftest import WebServer
from tests.web.test_chat_page import answered_chat


def run_input(thread_id: str, run_id: str, text: str) -> dict[str, Any]:
    return {
        "threadId": thread_id,
        "runId": run_id,
        "protocolVersion": "1.0",
        "messages": [{"id": f"user-{uuid.uuid4().hex[:8]}", "role": "user", "content": text}],
        "tools": [],
        "context": [],
        "state": {},
        "forwardedProps": {},
    }


async def make_run(web: WebServer, answer: str | None) -> tuple[str, str, list[dict[str, Any]]]:
    """A run by another client, to its end: (thread id, run id, the events it was sent). With
    no ``answer`` the model is down (HTTP 503) and the run fails."""
    thread_id, run_id = f"thread-{uuid.uuid4().hex[:8]}", f"run-{uuid.uuid4().hex[:8]}"
    web.ollama.enqueue(
        ScriptedReply(status=503) if answer is None else ScriptedReply(text_reply(answer))
    )
    async with httpx.AsyncClient(base_url=web.url, timeout=PATIENCE) as client:
        status, events = await stream(client, "/agui", run_input(thread_id, run_id, "Hello"))
    assert status == 200, events
    ending = "RUN_ERROR" if answer is None else "RUN_FINISHED"
    assert events[-1]["type"] == ending, events[-1]
    return thread_id, run_id, events


async def stored_event_count(web: WebServer, thread_id: str, run_id: str) -> int:
    async with httpx.AsyncClient(base_url=web.url, timeout=PATIENCE) as client:
        answer = await client.get(f"/admin/runs/{run_id}", params={"thread": thread_id})
    assert answer.status_code == 200, answer.text
    assert answer.json()["status"] == "succeeded"
    return len(answer.json()["events"])


async def open_live_feed(page: Page, path: str = "/admin", query: str = "") -> None:
    """Open the page and wait until its feed reader is connected (a live reader starts at
    the newest entry: what happens from then on reaches it)."""
    await page.goto(path)
    status = page.get_by_test_id("feed-status")
    await expect(status).to_have_attribute("data-query", query)
    await expect(status).to_have_attribute("data-state", "live")


def feed_entries(page: Page, run_id: str, event_type: str | None = None) -> Locator:
    typed = f'[data-type="{event_type}"]' if event_type else ""
    return page.locator(f'[data-testid=feed-entry][data-run-id="{run_id}"]{typed}')


async def types_shown(entries: Locator) -> list[str]:
    return await entries.evaluate_all("nodes => nodes.map(node => node.dataset.type)")


async def chat_run(browser: Browser, web: WebServer, answer: str) -> tuple[str, str]:
    """A run made by a user in another browser, on the chat page: (thread id, run id)."""
    context = await browser.new_context(base_url=web.url)
    try:
        chat = await context.new_page()
        thread_id = await answered_chat(chat, web.ollama, "When does the tide turn?", answer)
    finally:
        await context.close()
    async with httpx.AsyncClient(base_url=web.url, timeout=PATIENCE) as client:
        runs = (await client.get("/admin/runs", params={"thread": thread_id})).json()["runs"]
    [run] = runs
    return thread_id, run["runId"]


async def stored_types(web: WebServer, thread_id: str, run_id: str) -> list[str]:
    async with httpx.AsyncClient(base_url=web.url, timeout=PATIENCE) as client:
        answer = await client.get(f"/admin/runs/{run_id}", params={"thread": thread_id})
    return [item["event"]["type"] for item in answer.json()["events"]]


async def test_a_run_from_another_browser_appears_live_in_the_feed_the_runs_and_a_timeline(
    page: Page, web: WebServer, browser: Browser
):
    await open_live_feed(page)
    await expect(page.get_by_test_id("health-status")).to_have_text("ok")
    await expect(page.locator("[data-testid=health-check][data-name=model]")).to_have_attribute(
        "data-status", "ok"
    )

    thread_id, run_id = await chat_run(browser, web, "The tide turns at noon.")
    sent = await stored_types(web, thread_id, run_id)

    # Live: every event of the run, in order (the feed shows the newest first).
    await expect(feed_entries(page, run_id, "RUN_FINISHED")).to_have_count(1)
    assert list(reversed(await types_shown(feed_entries(page, run_id)))) == sent
    await expect(feed_entries(page, run_id, "TEXT_MESSAGE_CONTENT").first).to_be_visible()

    row = page.locator(f'[data-testid=run-row][data-run-id="{run_id}"]')
    await expect(row.get_by_test_id("run-status")).to_have_text("succeeded")
    await expect(row).to_have_attribute("data-thread-id", thread_id)
    await expect(row.get_by_test_id("run-duration")).to_have_text(re.compile(r"\d"))
    await expect(row.get_by_test_id("run-tokens")).to_have_text(re.compile(r"^\d+ / \d+$"))
    await expect(row.get_by_test_id("run-error")).to_have_text("")

    await row.click()
    timeline = page.get_by_test_id("run-timeline")
    await expect(timeline).to_have_attribute("data-run-id", run_id)
    await expect(timeline.get_by_test_id("timeline-status")).to_have_text("succeeded")
    await expect(timeline.get_by_test_id("timeline-event")).to_have_count(len(sent))
    assert await types_shown(timeline.get_by_test_id("timeline-event")) == sent
    await expect(row).to_have_attribute("aria-selected", "true")

    await screenshot(page, "admin-monitor")


async def test_the_runs_status_filter_lists_only_the_runs_in_that_state(page: Page, web: WebServer):
    _, succeeded, _ = await make_run(web, "All good.")
    _, failed, events = await make_run(web, None)
    await page.goto("/admin")
    rows = page.get_by_test_id("run-row")
    succeeded_row = page.locator(f'[data-testid=run-row][data-run-id="{succeeded}"]')
    failed_row = page.locator(f'[data-testid=run-row][data-run-id="{failed}"]')
    await expect(succeeded_row).to_be_visible()
    await expect(failed_row.get_by_test_id("run-error")).to_contain_text(events[-1]["code"])

    await page.get_by_test_id("runs-status-filter").select_option("failed")
    await expect(succeeded_row).to_have_count(0)
    await expect(failed_row.get_by_test_id("run-status")).to_have_text("failed")
    assert set(await rows.evaluate_all("rows => rows.map(row => row.dataset.status)")) == {"failed"}

    await page.get_by_test_id("runs-status-filter").select_option("")
    await expect(succeeded_row).to_be_visible()


async def test_pause_holds_new_entries_with_their_count_and_resume_shows_them(
    page: Page, web: WebServer
):
    await open_live_feed(page)
    pause = page.get_by_test_id("feed-pause")
    await pause.click()
    await expect(pause).to_have_attribute("aria-pressed", "true")
    held = page.get_by_test_id("feed-held")
    await expect(held).to_have_text("0 new held")

    thread_id, run_id, _ = await make_run(web, "Paused, but not lost.")
    count = await stored_event_count(web, thread_id, run_id)

    await expect(held).to_have_attribute("data-count", str(count))
    await expect(held).to_have_text(f"{count} new held")
    await expect(feed_entries(page, run_id)).to_have_count(0)
    # The runs list is not the feed: it shows the run while the feed is paused.
    row = page.locator(f'[data-testid=run-row][data-run-id="{run_id}"]')
    await expect(row.get_by_test_id("run-status")).to_have_text("succeeded")

    await pause.click()  # resume
    await expect(pause).to_have_attribute("aria-pressed", "false")
    await expect(held).to_have_count(0)
    await expect(feed_entries(page, run_id)).to_have_count(count)
    await expect(feed_entries(page, run_id).first).to_have_attribute("data-type", "RUN_FINISHED")


async def test_feed_filtered_by_event_type_shows_only_events_of_that_type(
    page: Page, web: WebServer
):
    await open_live_feed(page)
    await page.get_by_test_id("filter-types").fill("RUN_FINISHED")
    await page.get_by_test_id("filter-apply").click()
    await expect(page).to_have_url(re.compile(r"/admin\?types=RUN_FINISHED$"))
    status = page.get_by_test_id("feed-status")
    await expect(status).to_have_attribute("data-query", "types=RUN_FINISHED")
    await expect(status).to_have_attribute("data-state", "live")

    _, run_id, events = await make_run(web, "Only the end shows.")
    assert len(events) > 1

    await expect(feed_entries(page, run_id, "RUN_FINISHED")).to_have_count(1)
    await expect(feed_entries(page, run_id)).to_have_count(1)


async def test_resuming_after_entries_the_feed_no_longer_has_shows_the_resync_marker(
    page: Page, web: WebServer
):
    _, run_id, events = await make_run(web, "Before the admin looked.")

    # A reader resuming after an id older than the oldest entry kept has missed some.
    await open_live_feed(page, "/admin?after=1-0", "after=1-0")

    banner = page.get_by_test_id("resync-banner")
    await expect(banner).to_be_visible()
    await expect(banner).to_have_attribute("data-reason", "retention")
    await expect(banner).to_contain_text("1-0")
    await expect(page.get_by_test_id("feed-resync")).to_have_count(1)
    # ...and it goes on with what the feed still has: the earlier run, replayed.
    await expect(feed_entries(page, run_id)).to_have_count(len(events))
