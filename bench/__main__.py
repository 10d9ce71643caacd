"""``python -m bench``: every benchmark, then one markdown summary on stdout.

Progress goes to stderr; stdout is the summary alone, ready to paste (see RESULTS.md).
"""

from __future__ import annotations

import argparse
import datetime
import importlib.metadata
import os
import platform
import resource
import subprocess
import sys
import time

from bench import agui_throughput, chat_completions, concurrency, persistence

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


def cpu_seconds() -> tuple[float, float] | None:
    """(CPU seconds all processes used, CPU seconds this one and its children used) so far.

    Their difference over a run is what other work took: figures from a busy machine are off.
    """
    try:
        with open("/proc/stat") as stat:
            jiffies = [int(value) for value in stat.readline().split()[1:]]
    except OSError:
        return None
    tick = os.sysconf("SC_CLK_TCK")
    busy = (sum(jiffies[:8]) - jiffies[3] - jiffies[4]) / tick  # all but idle and iowait
    ours = sum(
        usage.ru_utime + usage.ru_stime
        for usage in map(resource.getrusage, (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN))
    )
    return busy, ours


def other_load(before: tuple[float, float] | None, seconds: float) -> str:
    """Average number of CPUs other processes kept busy since ``before``."""
    after = cpu_seconds()
    if before is None or after is None:
        return "unknown"
    others = max(0.0, (after[0] - before[0]) - (after[1] - before[1])) / seconds
    verdict = " (NOT QUIET: the figures are skewed)" if others > 0.15 else ""
    return f"{others:.2f} CPUs{verdict}"


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
    throughput: agui_throughput.ThroughputResult,
    load: concurrency.ConcurrencyResult,
    stored: persistence.PersistenceResult,
) -> list[str]:
    lines = ["| goal | measured | target | |", "|---|---:|---:|---|"]
    for label, ratio, goal, met in throughput.goals():
        lines.append(f"| events/s {label} | {ratio:.2f}x | >= {goal:g}x | {_verdict(met)} |")
    goal_ms = concurrency.GOAL_P99_MS
    for index, delay in enumerate(load.delays):
        p99 = (delay.steady_ms or delay.all_ms)[1]
        over = "steady" if delay.steady_ms else "all deltas"
        lines.append(
            f"| p99 delivery delay ({over}), {delay.server}, {delay.runs:,} runs x 1 delta per "
            f"{delay.interval * 1000:g} ms | {p99:.1f} ms "
            + (f"| < {goal_ms:g} ms | {_verdict(p99 < goal_ms)} |" if index == 0 else "| | |")
        )
    citadel = next(m for m in load.memory if m.server == "citadel")
    goal_kb = concurrency.GOAL_IDLE_KB
    lines.append(
        f"| memory per idle run | {citadel.per_run_kb:.1f} KB | < {goal_kb:g} KB "
        f"| {_verdict(citadel.per_run_kb < goal_kb)} |"
    )
    for label, value, target, met in persistence.goals(stored):
        lines.append(f"| {label} | {value} | {target} | {_verdict(met)} |")
    return lines


# The knowledge-base and access benchmarks, each a module printing its own markdown, run as
# children: the embedder comparison needs the export's build venv, each loads its own models.
KNOWLEDGE = (
    ("Embedders: onnxruntime vs sentence-transformers", "bench.embedders", False),
    ("Vector search: embedded Qdrant engine vs qdrant-client local mode", "bench.vectors", True),
    ("Embedding cache and ingestion", "bench.knowledge", False),
    ("Retrieval quality on docs/", "bench.retrieval_quality", False),
)
ACCESS = (("Token verification and a flood of bad tokens", "bench.auth", False),)
SCALE_OUT = (
    ("Workers: in-process bus vs two workers on Redis", "bench.workers", False),
    ("An admin who stops reading the feed: the runs' delivery delay", "bench.stalled_admin", False),
)


def child_sections(benches: tuple[tuple[str, str, bool], ...]) -> list[str]:
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    lines: list[str] = []
    for title, module, preformatted in benches:
        print(f"bench: {module} ...", file=sys.stderr, flush=True)
        done = subprocess.run(
            [sys.executable, "-m", module], cwd=root, capture_output=True, text=True, check=False
        )
        output = (
            done.stdout.strip() or f"(no output; exit {done.returncode})\n{done.stderr[-2000:]}"
        )
        lines += ["", f"### {title}", "", f"`python -m {module}`", ""]
        lines += ["```", output, "```"] if preformatted else [output]
    return lines


def _verdict(met: bool) -> str:
    return "PASS" if met else "FAIL"


def main() -> None:
    parser = argparse.ArgumentParser(description="Run every Citadel benchmark.")
    parser.add_argument("--repetitions", type=int, default=7, help="throughput repetitions")
    parser.add_argument("--client-procs", type=int, default=1, help="concurrency client procs")
    args = parser.parse_args()
    started, cpu_before = time.perf_counter(), cpu_seconds()
    about = machine()
    print("bench: throughput (citadel, pydantic_ai, bare) ...", file=sys.stderr, flush=True)
    throughput = agui_throughput.run(args.repetitions)
    print("bench: concurrency and idle memory (citadel, bare) ...", file=sys.stderr, flush=True)
    load = concurrency.run(args.client_procs)
    print("bench: persistence (citadel on memory and on Postgres) ...", file=sys.stderr, flush=True)
    stored = persistence.run()
    print("bench: chat completions (citadel vs the model server) ...", file=sys.stderr, flush=True)
    chat = chat_completions.run()
    knowledge = child_sections(KNOWLEDGE)
    access = child_sections(ACCESS)
    scale_out = child_sections(SCALE_OUT)
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
                *summary(throughput, load, stored),
                "",
                "## Throughput",
                "",
                agui_throughput.report(throughput),
                "",
                "## Concurrency and memory",
                "",
                concurrency.report(load),
                "",
                "## Persistence",
                "",
                persistence.report(stored),
                "",
                "## OpenAI-compatible chat completions",
                "",
                chat_completions.report(chat),
                "",
                "## Knowledge base",
                *knowledge,
                "",
                "## Identity and access",
                *access,
                "",
                "## Scale-out",
                *scale_out,
            ]
        )
    )


if __name__ == "__main__":
    main()
