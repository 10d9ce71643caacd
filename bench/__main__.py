"""``python -m bench``: every benchmark, then one markdown summary on stdout.

Progress goes to stderr; stdout is the summary alone, ready to paste (see RESULTS.md).

A goal missed is a FAIL in the summary; a benchmark that broke (a run failed, a stream was
invalid, a figure is missing, the module crashed or exited non-zero) is a FAIL too, is named
under the summary, and makes the process exit 1 once every other benchmark has run
(bench/verdicts.py). ``--smoke`` runs every benchmark with tiny sizes and evaluates no timing
goal: does everything still work?
"""

from __future__ import annotations

import argparse
import datetime
import importlib.metadata
import os
import platform
import subprocess
import sys
import time
import traceback
from collections.abc import Callable
from typing import TypeVar

from bench import agui_throughput, chat_completions, concurrency, persistence, voice, web
from bench.quiet import cpu_seconds, other_load
from bench.verdicts import EXIT_BROKEN, broken_lines

T = TypeVar("T")

PACKAGES = ("uvicorn", "uvloop", "httptools", "starlette", "orjson", "pydantic-ai-slim")


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def machine() -> list[str]:
    versions = []
    for name in PACKAGES:
        try:
            versions.append(f"{name} {importlib.metadata.version(name)}")
        except importlib.metadata.PackageNotFoundError:
            versions.append(f"{name} (absent)")
    return [
        f"- Date: {datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC",
        f"- CPU: {cpu_model()}, {os.cpu_count()} logical CPUs; {platform.system()} "
        f"{platform.release()} {platform.machine()}",
        f"- Python {platform.python_version()} ({platform.python_implementation()}); "
        + ", ".join(versions),
        f"- Command: `{' '.join(['python', '-m', 'bench', *sys.argv[1:]])}`",
    ]


def summary(
    throughput: agui_throughput.ThroughputResult | None,
    load: concurrency.ConcurrencyResult | None,
    stored: persistence.PersistenceResult | None,
    spoken: voice.VoiceResult | None,
    browsed: web.WebResult | None,
    broken: dict[str, list[str]],
) -> list[str]:
    """The goals' table (a benchmark that did not complete is a FAIL row of its own), then
    every benchmark that broke and why."""
    lines = ["| goal | measured | target | |", "|---|---:|---:|---|"]
    parts = (
        ("throughput", throughput, lambda r: r.summary_rows()),
        ("concurrency", load, lambda r: r.summary_rows()),
        ("persistence", stored, persistence.summary_rows),
        ("voice", spoken, lambda r: r.summary_rows()),
        ("web", browsed, lambda r: r.summary_rows()),
    )
    for name, result, rows in parts:
        lines += rows(result) if result is not None else [_did_not_complete(name, broken)]
    lines += [
        _did_not_complete(name, broken)
        for name in broken
        if name not in ("throughput", "concurrency", "persistence", "voice", "web")
    ]
    if broken:
        lines += ["", "Benchmarks that broke (their figures are not to be trusted):", ""]
        lines += [f"- {name}: {problem}" for name, found in broken.items() for problem in found]
    return lines


def _did_not_complete(name: str, broken: dict[str, list[str]]) -> str:
    return (
        f"| {name} | broke: {len(broken.get(name, []))} problem(s), see below | completes | FAIL |"
    )


def attempt(name: str, broken: dict[str, list[str]], measure: Callable[[], T]) -> T | None:
    """``measure()``, or None if it raised: recorded in ``broken`` and the run goes on."""
    try:
        return measure()
    except Exception as error:
        traceback.print_exc(file=sys.stderr)
        broken[name] = [f"{type(error).__name__}: {error}"]
        return None


# The knowledge-base and access benchmarks, each a module printing its own markdown, run as
# children: the embedder comparison needs the export's build venv, each loads its own models.
KNOWLEDGE = (
    ("Embedders: onnxruntime vs sentence-transformers", "bench.embedders", False),
    ("Vector search: embedded Qdrant engine vs qdrant-client local mode", "bench.vectors", True),
    ("Embedding cache and ingestion", "bench.knowledge", False),
    ("Retrieval quality on docs/", "bench.retrieval_quality", False),
)
ANSWERS = (
    ("Answer quality of the embedded default, before and after", "bench.answer_quality", False),
)
ACCESS = (("Token verification and a flood of bad tokens", "bench.auth", False),)
SCALE_OUT = (
    ("Workers: in-process bus vs two workers on Redis", "bench.workers", False),
    ("An admin who stops reading the feed: the runs' delivery delay", "bench.stalled_admin", False),
)


def child_sections(
    benches: tuple[tuple[str, str, bool], ...], broken: dict[str, list[str]], smoke: bool = False
) -> list[str]:
    """Each module's markdown under its title; one that exits non-zero (broken, or crashed)
    is recorded in ``broken`` with the end of its stderr."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    lines: list[str] = []
    for title, module, preformatted in benches:
        print(f"bench: {module} ...", file=sys.stderr, flush=True)
        command = [sys.executable, "-m", module] + (["--smoke"] if smoke else [])
        done = subprocess.run(command, cwd=root, capture_output=True, text=True, check=False)
        output = done.stdout.strip() or "(no output)"
        if done.returncode != 0:
            print(done.stderr[-4000:], file=sys.stderr)
            found = [
                line[len("BROKEN: ") :]
                for line in output.splitlines()
                if line.startswith("BROKEN: ")
            ]
            tail = done.stderr.strip().splitlines()[-1:] if done.stderr.strip() else []
            broken[module] = found or [
                f"exit {done.returncode}: {' '.join(tail) or 'no error message'}"
            ]
            if not found:
                output += f"\n\nBROKEN: exit {done.returncode}\n{done.stderr[-2000:]}"
        lines += ["", f"### {title}", "", f"`{' '.join(['python', '-m', *command[2:]])}`", ""]
        lines += ["```", output, "```"] if preformatted else [output]
    return lines


def section(result: T | None, report: Callable[[T], str], name: str, broken: dict) -> str:
    """A benchmark's report with its BROKEN lines, or why there is none."""
    if result is None:
        return "\n".join(["(did not complete)", *broken_lines(broken.get(name, []))])
    found = result.broken()  # type: ignore[attr-defined]
    if found:
        broken[name] = found
    return "\n".join([report(result), *broken_lines(found)])


def main() -> None:
    parser = argparse.ArgumentParser(description="Run every Citadel benchmark.")
    parser.add_argument("--repetitions", type=int, default=7, help="throughput repetitions")
    parser.add_argument("--client-procs", type=int, default=1, help="concurrency client procs")
    parser.add_argument(
        "--smoke", action="store_true", help="every benchmark with tiny sizes, no timing goals"
    )
    args = parser.parse_args()
    smoke = args.smoke
    broken: dict[str, list[str]] = {}
    started, cpu_before = time.perf_counter(), cpu_seconds()
    about = machine()
    print("bench: throughput (citadel, pydantic_ai, bare) ...", file=sys.stderr, flush=True)
    throughput = attempt(
        "throughput",
        broken,
        agui_throughput.smoke if smoke else lambda: agui_throughput.run(args.repetitions),
    )
    print("bench: concurrency and idle memory (citadel, bare) ...", file=sys.stderr, flush=True)
    load = attempt(
        "concurrency",
        broken,
        concurrency.smoke if smoke else lambda: concurrency.run(args.client_procs),
    )
    print("bench: persistence (citadel on memory and on Postgres) ...", file=sys.stderr, flush=True)
    stored = attempt("persistence", broken, persistence.smoke if smoke else persistence.run)
    print("bench: chat completions (citadel vs the model server) ...", file=sys.stderr, flush=True)
    chat = attempt(
        "chat completions", broken, chat_completions.smoke if smoke else chat_completions.run
    )
    print(
        "bench: voice (citadel /voice/ws vs bare livekit-agents) ...", file=sys.stderr, flush=True
    )
    spoken = attempt("voice", broken, voice.smoke if smoke else voice.run)
    print("bench: web (the chat page in Chromium vs a raw client) ...", file=sys.stderr, flush=True)
    browsed = attempt("web", broken, web.smoke if smoke else web.run)
    sections = {
        "Throughput": section(throughput, agui_throughput.report, "throughput", broken),
        "Concurrency and memory": section(load, concurrency.report, "concurrency", broken),
        "Persistence": section(stored, persistence.report, "persistence", broken),
        "OpenAI-compatible chat completions": section(
            chat, chat_completions.report, "chat completions", broken
        ),
        "Voice: end of speech to first agent audio": section(spoken, voice.report, "voice", broken),
        "Web app: send to first answer token, and the JavaScript before it": section(
            browsed, web.report, "web", broken
        ),
    }
    knowledge = child_sections(KNOWLEDGE, broken, smoke)
    answers = child_sections(ANSWERS, broken, smoke)
    access = child_sections(ACCESS, broken, smoke)
    scale_out = child_sections(SCALE_OUT, broken, smoke)
    elapsed = time.perf_counter() - started
    print(
        "\n".join(
            [
                "# Citadel benchmarks",
                "",
                *about,
                f"- Wall time of the whole run: {elapsed:.0f} s; other processes' CPU use "
                f"meanwhile: {other_load(cpu_before, elapsed)}",
                "",
                "## Summary",
                "",
                *(["Smoke run: tiny sizes, timing goals not evaluated.", ""] if smoke else []),
                *summary(throughput, load, stored, spoken, browsed, broken),
                *(
                    line
                    for title, text in sections.items()
                    for line in ("", f"## {title}", "", text)
                ),
                "",
                "## Knowledge base",
                *knowledge,
                "",
                "## Answers",
                *answers,
                "",
                "## Identity and access",
                *access,
                "",
                "## Scale-out",
                *scale_out,
            ]
        ),
        flush=True,
    )
    if broken:
        print(f"bench: broken: {', '.join(broken)}", file=sys.stderr)
        sys.exit(EXIT_BROKEN)


if __name__ == "__main__":
    main()
