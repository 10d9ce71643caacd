"""The knowledge page in real Chromium against a real server: the embedded embedder, the
Qdrant engine and Postgres do the work; the chat model is the Ollama TEST DOUBLE (unused
here: nothing on this page asks the model)."""

from __future__ import annotations

import re

from playwright.async_api import Page, expect

INGESTION = 60_000  # ms: the embedded embedder loads its model on the first job

LIGHTHOUSE = b"""# The lighthouse

## The keeper
The lighthouse keeper climbs the spiral stairs at dusk to light the lamp, and
polishes the great lens every morning.

## Fog
When fog rolls in, the keeper sounds the horn every thirty seconds.
"""


async def test_uploaded_markdown_is_ingested_listed_found_by_a_query_and_deleted(page: Page):
    await page.goto("/knowledge")
    await expect(page.get_by_test_id("documents-empty")).to_be_visible()

    await page.get_by_test_id("upload-files").set_input_files(
        {"name": "lighthouse.md", "mimeType": "text/markdown", "buffer": LIGHTHOUSE}
    )
    await page.get_by_test_id("upload-submit").click()
    job = page.get_by_test_id("ingest-job")
    await expect(job).to_have_attribute("data-status", "succeeded", timeout=INGESTION)
    await expect(job).to_contain_text("1/1 files")

    document = page.get_by_test_id("document")
    await expect(document).to_have_count(1)
    await expect(document.get_by_test_id("document-source")).to_have_text("lighthouse.md")

    await page.get_by_test_id("query-input").fill("who lights the lamp at dusk?")
    await page.get_by_test_id("query-submit").click()
    best = page.get_by_test_id("hit").first
    await expect(best.get_by_test_id("hit-source")).to_have_text("lighthouse.md")
    await expect(best.get_by_test_id("hit-snippet")).to_contain_text("keeper")
    await expect(best.get_by_test_id("hit-score")).to_have_text(re.compile(r"^-?\d+\.\d{3}$"))

    await document.get_by_role("button", name="Delete lighthouse.md").click()
    await expect(page.get_by_test_id("documents-empty")).to_be_visible()
    await page.get_by_test_id("query-submit").click()
    await expect(page.get_by_test_id("no-hits")).to_be_visible()


async def test_a_file_that_cannot_be_read_fails_its_job_and_the_error_is_shown(page: Page):
    await page.goto("/knowledge")
    await expect(page.get_by_test_id("documents-empty")).to_be_visible()

    await page.get_by_test_id("upload-files").set_input_files(
        {"name": "broken.pdf", "mimeType": "application/pdf", "buffer": b"%PDF-1.4 nonsense"}
    )
    await page.get_by_test_id("upload-submit").click()

    job = page.get_by_test_id("ingest-job")
    await expect(job).to_have_attribute("data-status", "failed", timeout=INGESTION)
    alert = job.get_by_role("alert")
    await expect(alert).to_contain_text("broken.pdf")
    await expect(alert).to_contain_text("corrupt")
    await expect(page.get_by_test_id("documents-empty")).to_be_visible()
