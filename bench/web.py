"""The web app in Chromium: send → first answer token, next to a raw HTTP client, and the
JavaScript loaded before the first answer, next to a bare ``<CopilotChat>`` page:
``python -m bench.web``.

* **Send → first answer token.** A real Citadel server (``bench.servers`` ``citadel_web``: the
  in-memory store, retrieval off, the scripted model answering ``"tok "`` at once, the app
  built in web-demo/dist at ``/``). **browser**: Debian's Chromium (tests/support/browser.py)
  opens ``/chat`` (a new thread each run), waits for CopilotKit's ``/connect``, types the
  prompt; then one ``page.evaluate`` installs a MutationObserver, reads ``performance.now()``
  and clicks Send, and the observer reads the clock again when the answer's text is in the
  DOM. **raw**: httpx POSTs the same ``RunAgentInput`` the browser sent (captured from its
  warm-up run: its tools, context and state; a new thread, run and message id each time) to
  ``/api/copilotkit/agent/default/run`` and times sending to the first
  ``TEXT_MESSAGE_CONTENT`` event. The model costs nothing, so the difference is the browser
  path's own: CopilotKit's client, React, the markdown renderer. The two alternate (the order
  swapped every pair) after warm-up runs of each; a run waits for the previous one to end.
  Goal: the browser adds at most 50 ms at p50.
* **JavaScript before the first answer, gzipped.** The app's build, and a bare page holding
  only ``<CopilotKitProvider runtimeUrl="/api/copilotkit">`` + ``<CopilotChat>`` + CopilotKit's
  CSS (bench/web_bare/, built here with web-demo's vite, plugin and build settings into
  bench/out/web-bare/), each served by Citadel, each loaded in a fresh browser context: the
  page opens, a message is sent, and every JavaScript response until the answer is visible
  is counted at its gzip size (level 6, as a server compresses). Files of the build not loaded
  by then are lazy chunks (the app's other pages; CopilotKit's code highlighting and diagrams
  in both builds). Goal: the app loads at most 15 % more than the bare page.

A run with no answer, a raw stream without text, or a build that loads no JavaScript breaks
the benchmark (exit 1, bench/verdicts.py). ``--smoke``: 2 runs each way, no goal evaluated.
"""

from __future__ import annotations

import argparse
import asyncio
import gzip
import re
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import orjson
from playwright.async_api import Browser, BrowserContext, Page, Response, expect

from bench.quiet import cpu_seconds, descendants_cpu, other_load
from bench.servers import running
from bench.verdicts import figure, finish, p50, p95, quotient, verdict
from tests.support.browser import WEB_APP, chromium

ROOT = Path(__file__).resolve().parents[1]
WEB = ROOT / "web-demo"
BARE_SOURCE = ROOT / "bench" / "web_bare"
BARE_STAGING = ROOT / "bench" / "out" / "web-bare-src"
BARE_BUILT = ROOT / "bench" / "out" / "web-bare"

RUN_PATH = "/api/copilotkit/agent/default/run"
PROMPT = "deltas=1"  # the scripted model's script: one delta, at once
ANSWER = "tok"  # what it answers
TIMEOUT_MS = 30_000  # one page load, or one answer
GZIP_LEVEL = 6
TOP_CHUNKS = 5

GOAL_ADDED_MS = 50.0  # the browser path over the raw client, send → first token, at p50
GOAL_EXTRA_JS = 0.15  # the app's JavaScript over the bare page's, gzipped


@dataclass(frozen=True)
class Sizes:
    runs: int  # measured on each side
    warm_up: int  # on each side first, not counted


FULL = Sizes(runs=20, warm_up=3)
SMOKE_SIZES = Sizes(runs=2, warm_up=1)

# Resolves to [the click's performance.now(), milliseconds from just before the click on Send
# to the moment the assistant message holds the answer's text] (the observer's callback runs
# before the next paint).
FIRST_TOKEN = """([answer, timeout]) => new Promise((resolve, reject) => {
  const selector = '[data-testid="copilot-assistant-message"]';
  const answered = () => [...document.querySelectorAll(selector)].some(
    (message) => message.textContent.includes(answer));
  if (answered()) return reject(new Error("an answer was on the page before Send"));
  const timer = setTimeout(() => reject(new Error("no answer")), timeout);
  const observer = new MutationObserver(() => {
    if (!answered()) return;
    const elapsed = performance.now() - started;
    observer.disconnect();
    clearTimeout(timer);
    resolve([started, elapsed]);
  });
  observer.observe(document.body, { childList: true, subtree: true, characterData: true });
  const started = performance.now();
  document.querySelector('[data-testid="copilot-send-button"]').click();
})"""
# The run request's Resource Timing entry, in milliseconds after the click (null if none).
RUN_TIMING = """([path, started]) => {
  const entries = performance.getEntriesByType("resource");
  const entry = entries.filter((e) => e.name.endsWith(path)).at(-1);
  return entry && [entry.startTime, entry.responseStart, entry.responseEnd].map((t) => t - started);
}"""


# Send → first answer token ---------------------------------------------------------------------


@dataclass(frozen=True)
class Timeline:
    """Where a browser run's time goes: milliseconds after the click on Send, from the run
    request's Resource Timing entry."""

    fetch: float  # CopilotKit called fetch()
    headers: float  # the response's headers arrived (Citadel sends them at once)
    stream_end: float  # the run's stream ended (a one-delta answer: just after its delta)


@dataclass(frozen=True)
class Run:
    elapsed: float  # milliseconds from send to the first answer token
    timeline: Timeline | None = None  # the browser's only


@dataclass
class Side:
    """One side's runs, and what went wrong."""

    name: str
    runs: list[Run] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    @property
    def times(self) -> list[float]:
        return [run.elapsed for run in self.runs]


async def open_chat(page: Page) -> None:
    """A new thread's chat page, once CopilotKit has connected to it (a message sent before
    would race the connect's replay)."""
    async with page.expect_response(lambda r: r.url.endswith("/connect"), timeout=TIMEOUT_MS):
        await page.goto("/chat")
    await expect(page.get_by_test_id("copilot-chat-textarea")).to_be_visible(timeout=TIMEOUT_MS)
    await page.get_by_test_id("copilot-chat-textarea").fill(PROMPT)
    await expect(page.get_by_test_id("copilot-send-button")).to_be_enabled(timeout=TIMEOUT_MS)


async def run_ended(page: Page) -> None:
    chat = page.get_by_test_id("copilot-chat")
    await expect(chat).to_have_attribute("data-copilot-running", "false", timeout=TIMEOUT_MS)


async def browser_run(page: Page) -> Run:
    """Send → the answer's text in the DOM, measured inside the page, and the run request's
    timeline."""
    await open_chat(page)
    started, elapsed = await page.evaluate(FIRST_TOKEN, [ANSWER, TIMEOUT_MS])
    await run_ended(page)
    timing = await page.evaluate(RUN_TIMING, [RUN_PATH, started])
    if not timing:
        raise RuntimeError(f"no Resource Timing entry for {RUN_PATH}")
    return Run(float(elapsed), Timeline(*timing))


def fresh_input(template: dict[str, Any]) -> dict[str, Any]:
    """The browser's RunAgentInput with a new thread, run and message id, as a new chat sends."""
    message = {"id": str(uuid.uuid4()), "role": "user", "content": PROMPT}
    return template | {
        "threadId": f"thread_{uuid.uuid4().hex}",
        "runId": str(uuid.uuid4()),
        "messages": [message],
    }


def event_type(line: str) -> str | None:
    """The ``type`` of the AG-UI event on an SSE ``data:`` line; None for any other line."""
    return orjson.loads(line[5:]).get("type") if line.startswith("data:") else None


async def raw_run(client: httpx.AsyncClient, template: dict[str, Any]) -> Run:
    """Sending the run → its first TEXT_MESSAGE_CONTENT event, in milliseconds; the stream is
    read to its end."""
    body = orjson.dumps(fresh_input(template))
    first: float | None = None
    headers = {"content-type": "application/json", "accept": "text/event-stream"}
    started = time.perf_counter()
    async with client.stream("POST", RUN_PATH, content=body, headers=headers) as response:
        if response.status_code != 200:
            raise RuntimeError(f"{RUN_PATH}: HTTP {response.status_code}")
        async for line in response.aiter_lines():
            if first is None and event_type(line) == "TEXT_MESSAGE_CONTENT":
                first = time.perf_counter()
    if first is None:
        raise RuntimeError(f"{RUN_PATH}: no TEXT_MESSAGE_CONTENT in the stream")
    return Run((first - started) * 1000)


async def attempt(side: Side, measure: Callable[[], Awaitable[Run]], counted: bool) -> None:
    """One run of ``side``; its time if ``counted``, its failure in any case."""
    try:
        run = await measure()
    except Exception as error:  # a run that fails is reported, and breaks the benchmark
        side.problems.append(f"{type(error).__name__}: {str(error).splitlines()[0]}")
        return
    if counted:
        side.runs.append(run)
    label = "" if counted else " (warm-up)"
    print(f"bench.web: {side.name}{label}: {run.elapsed:.1f} ms", file=sys.stderr, flush=True)


async def first_tokens(browser: Browser, base: str, sizes: Sizes) -> tuple[Side, Side]:
    """Browser and raw runs in pairs, the order swapped every pair, on one server; warm-up
    pairs first. The raw client sends what the browser sent on its first run."""
    context = await browser.new_context(base_url=base, viewport={"width": 1280, "height": 800})
    page = await context.new_page()
    sent: list[dict[str, Any]] = []
    page.on("request", lambda r: sent.append(r.post_data_json) if r.url.endswith(RUN_PATH) else 0)

    async def raw_copy() -> Run:
        if not sent:
            raise RuntimeError("the browser sent no run to copy")
        return await raw_run(client, sent[0])

    ours, raw = Side("browser"), Side("raw")
    try:
        async with httpx.AsyncClient(base_url=base, timeout=TIMEOUT_MS / 1000) as client:
            for index in range(sizes.warm_up + sizes.runs):
                pair = [(ours, lambda: browser_run(page)), (raw, raw_copy)]
                for side, measure in pair if index % 2 == 0 else reversed(pair):
                    await attempt(side, measure, counted=index >= sizes.warm_up)
    finally:
        await context.close()
    return ours, raw


# JavaScript before the first answer ------------------------------------------------------------


@dataclass(frozen=True)
class Chunk:
    name: str  # the file's name in the build's assets/
    size: int  # bytes as built
    gzipped: int  # bytes at gzip level 6

    @property
    def stem(self) -> str:
        """The name without its content hash: the same module in either build."""
        return re.sub(r"-[\w-]{8}\.js$", "", self.name)


def chunk(name: str, data: bytes) -> Chunk:
    return Chunk(name, len(data), len(gzip.compress(data, compresslevel=GZIP_LEVEL, mtime=0)))


@dataclass
class Load:
    """One build's JavaScript: what its page loaded before the first answer, and the rest."""

    build: str
    loaded: list[Chunk] = field(default_factory=list)
    lazy: list[Chunk] = field(default_factory=list)  # the build's files not loaded by then
    problem: str | None = None

    @property
    def total(self) -> int | None:
        return sum(c.gzipped for c in self.loaded) if self.loaded else None

    def biggest(self) -> list[Chunk]:
        return sorted(self.loaded, key=lambda c: c.gzipped, reverse=True)[:TOP_CHUNKS]


def build_bare() -> Path:
    """bench/web_bare/ built with web-demo's vite into bench/out/web-bare/: a copy of the
    folder next to a link to web-demo's node_modules, so that its imports resolve to the very
    packages the app is built from (bench/web_bare/vite.config.mts)."""
    vite = WEB / "node_modules" / ".bin" / "vite"
    if not vite.exists():
        raise RuntimeError(f"no {vite}: install web-demo's packages (`make setup`)")
    shutil.rmtree(BARE_STAGING, ignore_errors=True)
    shutil.copytree(BARE_SOURCE, BARE_STAGING)
    (BARE_STAGING / "node_modules").symlink_to(WEB / "node_modules", target_is_directory=True)
    command = [str(vite), "build", "--logLevel", "warn"]
    subprocess.run(command, cwd=BARE_STAGING, check=True, stdout=sys.stderr)
    return BARE_BUILT


async def javascript_before_answer(
    browser: Browser, base: str, path: str, build: str, built: Path
) -> Load:
    """Open ``path`` in a fresh context (nothing cached), send a message, and count every
    JavaScript response until the answer is visible."""
    context = await browser.new_context(base_url=base)
    load = Load(build)
    try:
        load.loaded = await _scripts_until_answer(context, path)
    except Exception as error:  # reported, and breaks the benchmark
        load.problem = f"{type(error).__name__}: {str(error).splitlines()[0]}"
    finally:
        await context.close()
    seen = {c.name for c in load.loaded}
    load.lazy = [
        chunk(file.name, file.read_bytes())
        for file in sorted((built / "assets").glob("*.js"))
        if file.name not in seen
    ]
    return load


async def _scripts_until_answer(context: BrowserContext, path: str) -> list[Chunk]:
    page = await context.new_page()
    scripts: list[Response] = []

    def on_response(response: Response) -> None:
        if "javascript" in response.headers.get("content-type", ""):
            scripts.append(response)

    page.on("response", on_response)
    await page.goto(path, wait_until="networkidle", timeout=TIMEOUT_MS)  # runtime connected
    await page.get_by_test_id("copilot-chat-textarea").fill(PROMPT)
    await page.get_by_test_id("copilot-send-button").click()
    answer = page.get_by_test_id("copilot-assistant-message").last
    await expect(answer).to_contain_text(ANSWER, timeout=TIMEOUT_MS)
    page.remove_listener("response", on_response)
    return [chunk(r.url.rsplit("/", 1)[-1], await r.body()) for r in scripts]


# The benchmark ---------------------------------------------------------------------------------


@dataclass
class WebResult:
    sizes: Sizes
    browser_version: str
    ours: Side
    raw: Side
    app: Load
    bare: Load
    smoke: bool = False
    other_load: str = "not measured"  # the CPUs other processes kept busy meanwhile

    @property
    def added_ms(self) -> float | None:
        """The browser's p50 minus the raw client's."""
        ours, theirs = p50(self.ours.times), p50(self.raw.times)
        return None if ours is None or theirs is None else ours - theirs

    @property
    def extra_js(self) -> float | None:
        """The app's JavaScript over the bare page's, as a fraction (0.15 is 15 % more)."""
        ratio = quotient(self.app.total, self.bare.total)
        return None if ratio is None else ratio - 1

    def app_only_lazy(self) -> list[Chunk]:
        """The app's lazy files that the bare build has no file of: its other pages."""
        bare = {c.stem for c in (*self.bare.loaded, *self.bare.lazy)}
        return sorted((c for c in self.app.lazy if c.stem not in bare), key=lambda c: -c.gzipped)

    def broken(self) -> list[str]:
        found = [f"{s.name}: {problem}" for s in (self.ours, self.raw) for problem in s.problems]
        found += [
            f"{s.name}: {len(s.times)} of {self.sizes.runs} runs measured"
            for s in (self.ours, self.raw)
            if len(s.times) != self.sizes.runs
        ]
        for load in (self.app, self.bare):
            if load.problem:
                found.append(f"{load.build} page: {load.problem}")
            elif not load.loaded:
                found.append(f"{load.build} page: no JavaScript loaded")
        return found

    def summary_rows(self) -> list[str]:
        """The goals' rows: what the browser adds to a raw client, what the app adds to a
        bare <CopilotChat>."""
        broken = bool(self.broken())
        added, extra = self.added_ms, self.extra_js
        fast = None if added is None else added <= GOAL_ADDED_MS
        small = None if extra is None else extra <= GOAL_EXTRA_JS
        return [
            "| web: added by the browser (chat page in Chromium) to a raw client, send → "
            f"first answer token p50 | {figure(added, '+.0f', ' ms')} | ≤ {GOAL_ADDED_MS:g} ms "
            f"| {verdict(fast, broken=broken, smoke=self.smoke)} |",
            "| web: JavaScript before the first answer, the app over a bare `<CopilotChat>` "
            f"page (gzipped) | {figure(None if extra is None else extra * 100, '+.1f', ' %')} "
            f"| ≤ +{GOAL_EXTRA_JS:.0%} | {verdict(small, broken=broken, smoke=self.smoke)} |",
        ]


async def measure(sizes: Sizes, bare_built: Path, smoke: bool) -> WebResult:
    async with chromium() as browser:
        started, before, live = time.perf_counter(), cpu_seconds(), descendants_cpu()
        with running("citadel_web", env={"BENCH_WEB_DIR": str(WEB_APP)}) as server:
            base = f"http://127.0.0.1:{server.port}"
            print("bench.web: send → first token, browser and raw ...", file=sys.stderr)
            ours, raw = await first_tokens(browser, base, sizes)
            print("bench.web: the app's JavaScript ...", file=sys.stderr)
            app = await javascript_before_answer(browser, base, "/chat", "app", WEB_APP)
        with running("citadel_web", env={"BENCH_WEB_DIR": str(bare_built)}) as server:
            base = f"http://127.0.0.1:{server.port}"
            print("bench.web: the bare page's JavaScript ...", file=sys.stderr)
            bare = await javascript_before_answer(browser, base, "/", "bare", bare_built)
        # Chromium's CPU is ours: measured while it still runs.
        load = other_load(before, time.perf_counter() - started, descendants_cpu() - live)
        return WebResult(sizes, browser.version, ours, raw, app, bare, smoke, load)


def run(sizes: Sizes = FULL, smoke: bool = False) -> WebResult:
    if not (WEB_APP / "index.html").is_file():
        raise RuntimeError(f"the web app is not built in {WEB_APP}: `make setup` builds it")
    print("bench.web: building the bare page ...", file=sys.stderr, flush=True)
    return asyncio.run(measure(sizes, build_bare(), smoke))


def smoke() -> WebResult:
    """Two runs each way and both pages' JavaScript: does the benchmark work?"""
    return run(SMOKE_SIZES, smoke=True)


# The report ------------------------------------------------------------------------------------


def _ms(value: float | None) -> str:
    return figure(value, ".1f", " ms")


def _kb(value: float | None) -> str:
    return figure(None if value is None else value / 1000, ",.1f", " kB")


def _chunks(chunks: list[Chunk]) -> str:
    return ", ".join(f"{c.name} {_kb(c.gzipped)}" for c in chunks) or "none"


def timeline_row(side: Side) -> str:
    timelines = [run.timeline for run in side.runs if run.timeline is not None]
    marks = [
        p50([getattr(t, mark) for t in timelines]) for mark in ("fetch", "headers", "stream_end")
    ]
    return "| " + " | ".join(_ms(mark) for mark in (*marks, p50(side.times))) + " |"


def report(result: WebResult) -> str:
    sizes = result.sizes
    lines = [
        f"Send → first answer token: {sizes.runs} runs each way, alternating, after "
        f"{sizes.warm_up} warm-up runs each; a new thread per run; Citadel on the in-memory "
        f"store, its model answering {ANSWER!r} at once; headless Chromium "
        f"{result.browser_version}" + (" (smoke run)" if result.smoke else ""),
        "",
        "| path | p50 | p95 (nearest rank) | min | max | n |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    names = {
        "browser": "Chromium, the chat page: click on Send → answer text in the DOM",
        "raw": f"httpx, POST {RUN_PATH} → first TEXT_MESSAGE_CONTENT",
    }
    for side in (result.ours, result.raw):
        values = side.times
        lines.append(
            f"| {names[side.name]} | {_ms(p50(values))} | {_ms(p95(values))} "
            f"| {_ms(min(values) if values else None)} | {_ms(max(values) if values else None)} "
            f"| {len(values)} |"
        )
    ratio = quotient(p50(result.ours.times), p50(result.raw.times))
    paired = p50([a - b for a, b in zip(result.ours.times, result.raw.times, strict=False)])
    lines += [
        "",
        f"Browser minus raw at p50: {figure(result.added_ms, '+.1f', ' ms')}; ratio "
        f"{figure(ratio, '.1f', 'x')}; median of the differences pair by pair: "
        f"{figure(paired, '+.1f', ' ms')}. Other processes' CPU use meanwhile: "
        f"{result.other_load}.",
        "",
        "Where the browser's time goes (medians, ms after the click on Send; the run request's "
        "Resource Timing entry):",
        "",
        "| fetch() called | response headers | stream ended | answer text in the DOM |",
        "|---:|---:|---:|---:|",
        timeline_row(result.ours),
        "",
        f"JavaScript loaded from opening the page to the first answer visible, each file "
        f"gzipped at level {GZIP_LEVEL}; not loaded: the build's other .js files (lazy):",
        "",
        "| build | files loaded | as built | gzipped | files not loaded | gzipped |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    builds = {
        "app": "the app (web-demo/dist), /chat",
        "bare": "bare `<CopilotChat>` page (bench/out/web-bare), /",
    }
    for load in (result.app, result.bare):
        lines.append(
            f"| {builds[load.build]} | {len(load.loaded)} "
            f"| {_kb(sum(c.size for c in load.loaded) if load.loaded else None)} "
            f"| {_kb(load.total)} | {len(load.lazy)} | {_kb(sum(c.gzipped for c in load.lazy))} |"
        )
    app, bare = result.app.total, result.bare.total
    extra = result.extra_js
    lines += [
        "",
        f"The app over the bare page: {figure(quotient(app, bare), '.3f', 'x')} "
        f"({figure(None if extra is None else extra * 100, '+.1f', ' %')}; "
        f"{_kb(None if app is None or bare is None else app - bare)} more).",
        "",
        f"- Biggest files loaded, the app: {_chunks(result.app.biggest())}",
        f"- Biggest files loaded, the bare page: {_chunks(result.bare.biggest())}",
        f"- The app's lazy files the bare build has no file of (its other pages): "
        f"{_chunks(result.app_only_lazy())}",
        "",
        "| goal | measured | target | |",
        "|---|---:|---:|---|",
        *result.summary_rows(),
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--smoke", action="store_true", help="tiny sizes: does it work?")
    parser.add_argument("--runs", type=int, default=FULL.runs)
    parser.add_argument("--warm-up", type=int, default=FULL.warm_up)
    args = parser.parse_args()
    result = smoke() if args.smoke else run(Sizes(args.runs, args.warm_up))
    finish(report(result), result.broken())


if __name__ == "__main__":
    main()
