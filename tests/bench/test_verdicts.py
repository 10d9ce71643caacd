"""A goal line that cannot fail is a defect: every benchmark's verdict is FAIL when its runs
failed, its streams were invalid or a figure it needs is missing, and ``python -m bench`` then
exits non-zero. Built from results, no server: the smoke runs (test_smoke.py) run the code
that measures them."""

from __future__ import annotations

import subprocess

import pytest

from bench import __main__ as bench_main
from bench import agui_throughput, answer_quality, concurrency, persistence, voice, web
from bench.verdicts import EXIT_BROKEN, SMOKE, finish, verdict


def delay(
    server: str = "citadel",
    *,
    failed: int = 0,
    delivered: int | None = None,
    steady: tuple[float, float, float] | None = (60.0, 80.0, 90.0),
    runs: int = 1_000,
    deltas: int = 200,
) -> concurrency.DelayResult:
    return concurrency.DelayResult(
        server=server,
        runs=runs,
        deltas=deltas,
        interval=0.05,
        client_procs=1,
        wall=10.5,
        delivered=runs * deltas if delivered is None else delivered,
        steady_rate=None if steady is None else 19_000.0,
        run_length=(10.2, 10.4),
        failed=failed,
        peak_open=runs - failed,
        all_ms=(1.0, 5.0, 9.0) if steady is None else (61.0, 85.0, 99.0),
        steady_ms=steady,
        server_cpu=0.5,
        client_cpu=0.3,
        reasons={"HTTP 429": failed} if failed else {},
    )


def memory(server: str = "citadel", error: str | None = None) -> concurrency.MemoryResult:
    if error:
        return concurrency.MemoryResult(server, 1_000, None, None, error)
    return concurrency.MemoryResult(server, 1_000, 100 * 2**20, 150 * 2**20)


def test_a_verdict_passes_only_a_figure_that_exists_and_meets_its_goal():
    assert verdict(True) == "PASS"
    assert verdict(False) == "FAIL"
    assert verdict(None) == "FAIL"  # the figure is missing
    assert verdict(True, broken=True) == "FAIL"
    assert verdict(True, smoke=True) == verdict(False, smoke=True) == SMOKE
    assert verdict(True, broken=True, smoke=True) == verdict(None, smoke=True) == "FAIL"


def test_the_broken_1000_run_benchmark_of_issue_13_says_fail():
    """992 of 1,000 runs refused by the per-user stream cap, 1,600 of 200,000 deltas: the
    steady figure was "n/a" and the goal line read PASS (p99 of the deltas that came)."""
    broken = concurrency.ConcurrencyResult(
        [delay(failed=992, delivered=1_600, steady=None)], [memory()]
    )
    assert broken.goal_p99 is None
    problems = broken.broken()
    assert any("992 of 1,000 runs failed (992 x HTTP 429)" in p for p in problems)
    assert any("1,600 of 200,000 deltas received" in p for p in problems)
    assert any("no steady state" in p for p in problems)
    [delay_row, _memory_row] = broken.summary_rows()
    assert "| n/a |" in delay_row and delay_row.endswith("| FAIL |")
    goal_line = next(
        line for line in concurrency.report(broken).splitlines() if "steady, ms" in line
    )
    assert goal_line.endswith("| FAIL |")


def test_failed_runs_fail_the_goal_even_with_a_good_steady_figure():
    result = concurrency.ConcurrencyResult([delay(failed=1, delivered=199_800)], [memory()])
    assert result.summary_rows()[0].endswith("| FAIL |")
    # ...and a broken load that is not the goal's is a FAIL row of its own
    result = concurrency.ConcurrencyResult([delay(), delay("bare", failed=3)], [memory()])
    assert result.summary_rows()[0].endswith("| PASS |")
    assert result.summary_rows()[1].endswith("| completes | FAIL |")


def test_a_healthy_concurrency_result_passes():
    result = concurrency.ConcurrencyResult([delay(), delay("bare")], [memory(), memory("bare")])
    assert result.broken() == []
    assert [row.rsplit("|", 2)[-2].strip() for row in result.summary_rows()] == ["PASS", "", "PASS"]


def test_an_idle_memory_measure_that_broke_is_a_missing_figure_not_a_crash():
    error = "RuntimeError: 8 of 1,000 idle streams open after 60 s; ended: 992 x HTTP 429"
    result = concurrency.ConcurrencyResult([delay()], [memory(error=error), memory("bare")])
    assert result.summary_rows()[-1] == "| memory per idle run | n/a | < 100 KB | FAIL |"
    assert f"idle memory, citadel: {error}" in result.broken()
    assert "| citadel | n/a | n/a | n/a | < 100 | FAIL |" in concurrency.report(result)


def throughput(**rates: list[float]) -> agui_throughput.ThroughputResult:
    series = {}
    for server in agui_throughput.SERVERS:
        for scenario in agui_throughput.SCRIPTS:
            found = agui_throughput.Series(server, scenario)
            found.rates = rates.get(server, [100_000.0])
            found.cpu_us, found.busy = [5.0] * len(found.rates), [0.9] * len(found.rates)
            series[(server, scenario)] = found
    return agui_throughput.ThroughputResult(1, series, {}, {})


def test_throughput_goals_fail_without_their_figure_or_with_an_invalid_stream():
    healthy = throughput(pydantic_ai=[5_000.0])
    assert healthy.broken() == []
    assert all(shown == "PASS" for _label, _ratio, _goal, shown in healthy.goals())

    missing = throughput(pydantic_ai=[])  # every repetition of the peer failed
    assert missing.broken()
    rows = [row for row in missing.summary_rows() if "pydantic_ai" in row]
    assert rows and all("| n/a |" in row and row.endswith("| FAIL |") for row in rows)
    assert all(shown == "FAIL" for *_, shown in missing.goals())  # the bench is broken

    invalid = throughput(pydantic_ai=[5_000.0])
    invalid.problems["citadel/burst"] = ["RUN_FINISHED missing"]
    assert all(shown == "FAIL" for *_, shown in invalid.goals())
    assert all(shown == "FAIL (broken)" for *_, shown in invalid.adoption())


def test_persistence_goals_fail_when_a_part_broke_and_losing_events_fails_even_a_smoke_run():
    bursts = [
        persistence.Burst("citadel", 200_000, 1.0),
        persistence.Burst("citadel_postgres", 200_000, 1.4, stored=200_000),
    ]
    hydrations = [persistence.Hydration("citadel_postgres", 1_000, 90_000, [3.0] * 10)]
    delays = [delay("citadel"), delay("citadel_postgres")]
    healthy = persistence.PersistenceResult(bursts, delays, hydrations)
    assert healthy.broken() == []
    assert [shown for *_, shown in persistence.goals(healthy)] == ["PASS", "PASS", "PASS"]

    failing = persistence.PersistenceResult(
        bursts, [delay("citadel"), delay("citadel_postgres", failed=5)], hydrations
    )
    assert [shown for *_, shown in persistence.goals(failing)] == ["PASS", "FAIL", "PASS"]

    lossy = [bursts[0], persistence.Burst("citadel_postgres", 200_000, 1.4, stored=199_000)]
    smoke = persistence.PersistenceResult(lossy, delays, hydrations, persistence.SMOKE)
    assert [shown for *_, shown in persistence.goals(smoke)] == ["FAIL", SMOKE, SMOKE]

    short = persistence.Hydration("citadel_postgres", 20, 9_000, [3.0], ["HTTP 200, 20 of 1000"])
    cut = persistence.PersistenceResult(bursts, delays, [short])
    assert [shown for *_, shown in persistence.goals(cut)] == ["PASS", "PASS", "FAIL"]


def test_the_summary_names_a_benchmark_that_did_not_complete():
    broken = {"persistence": ["RuntimeError: replay of r1 answered 500"]}
    load = concurrency.ConcurrencyResult([delay()], [memory()])
    lines = bench_main.summary(throughput(pydantic_ai=[5_000.0]), load, None, None, None, broken)
    row = next(line for line in lines if line.startswith("| persistence |"))
    assert row.endswith("| completes | FAIL |")
    assert "- persistence: RuntimeError: replay of r1 answered 500" in lines


def test_a_child_benchmark_that_exits_non_zero_is_broken(monkeypatch: pytest.MonkeyPatch):
    answers = {
        "bench.vectors": subprocess.CompletedProcess([], 0, "the table", ""),
        "bench.knowledge": subprocess.CompletedProcess(
            [], EXIT_BROKEN, "the table\nBROKEN: ingestion: 0 chunks embedded", ""
        ),
        "bench.auth": subprocess.CompletedProcess([], 1, "", "Traceback...\nAssertionError: 500"),
    }
    monkeypatch.setattr(bench_main.subprocess, "run", lambda command, **_: answers[command[2]])
    broken: dict[str, list[str]] = {}
    benches = (("V", "bench.vectors", True), ("K", "bench.knowledge", False))
    lines = bench_main.child_sections((*benches, ("A", "bench.auth", False)), broken)
    assert broken == {
        "bench.knowledge": ["ingestion: 0 chunks embedded"],
        "bench.auth": ["exit 1: AssertionError: 500"],
    }
    assert "BROKEN: exit 1" in "\n".join(lines)


def test_a_broken_benchmark_exits_non_zero(capsys: pytest.CaptureFixture[str]):
    finish("the table", [])
    assert capsys.readouterr().out == "the table\n"
    with pytest.raises(SystemExit) as exited:
        finish("the table", ["citadel: 992 of 1,000 runs failed"])
    assert exited.value.code == EXIT_BROKEN
    assert capsys.readouterr().out == "the table\nBROKEN: citadel: 992 of 1,000 runs failed\n"


def scored(
    category: str, error: str | None = None, ttft: float | None = 0.2
) -> answer_quality.Score:
    case = answer_quality.Case(category, ["a question"], {"any": ["42"]})
    answer = answer_quality.Answer(text="" if error else "42", ttft=ttft, error=error)
    return answer_quality.score(case, answer)


def test_answer_quality_fails_on_a_failed_run_and_only_judges_what_it_asked():
    healthy = {"guided": [scored("arithmetic"), scored("greeting")]}
    assert answer_quality.broken(healthy) == []
    rows = answer_quality.goal_rows(healthy["guided"])
    assert [shown for *_, shown in rows] == ["PASS"] * 5

    # --category greeting divided by zero prompts of the categories the first goal is about
    greetings = answer_quality.goal_rows([scored("greeting")])
    assert [goal for goal, *_ in greetings] == [
        "degenerate answers",
        "tool calls on greetings",
        "median time to first token, s",
        "runs that failed",
    ]

    cut = {"before": [scored("docs")], "guided": [scored("arithmetic", "no RUN_FINISHED")]}
    assert answer_quality.broken(cut) == [
        "guided: 1 of 1 prompts failed, e.g. 'a question': no RUN_FINISHED"
    ]
    rows = answer_quality.goal_rows(cut["guided"], failed=True)
    assert all(shown == "FAIL" for *_, shown in rows)

    silent = answer_quality.goal_rows([scored("arithmetic", ttft=None)], smoke=True)
    ttft_row = next(row for row in silent if row[0].startswith("median time"))
    assert ttft_row[1].startswith("n/a") and ttft_row[3] == "FAIL"  # missing: even in smoke


def spoken(
    citadel: float, baseline: float, problem: str | None = None, smoke: bool = False
) -> voice.VoiceResult:
    sizes = voice.Sizes(questions=2, sessions=2, per_session=1)

    def route(name: str, latency: float, turns: int) -> voice.Route:
        metrics: dict[str, float | None] = dict.fromkeys(voice.METRICS, 0.5)
        return voice.Route(name, [voice.Turn("q", latency, "q", metrics) for _ in range(turns)])

    ours, together = route("citadel", citadel, 2), route("together", citadel, 2)
    ours.turns[-1].problem = problem
    return voice.VoiceResult(
        sizes,
        0.3,
        voice.Route("warm-up", []),
        ours,
        route("baseline", baseline, 2),
        together,
        100,
        110,
        120,
        smoke,
    )


def test_voice_goals_pass_or_fail_on_their_figures_and_fail_when_a_turn_broke():
    fast_enough = spoken(citadel=0.9, baseline=0.88)
    assert [row.rsplit("|", 2)[1].strip() for row in fast_enough.summary_rows()] == [
        "PASS",
        "PASS",
    ]
    slow = spoken(citadel=1.45, baseline=1.38)  # adds 70 ms, over 1 s
    assert "| +70 ms |" in slow.summary_rows()[0]
    assert [row.rsplit("|", 2)[1].strip() for row in slow.summary_rows()] == ["FAIL", "FAIL"]
    cut = spoken(citadel=0.9, baseline=0.88, problem="2 answers to one question")
    assert "citadel: 'q': 2 answers to one question" in cut.broken()
    assert all(row.endswith("| FAIL |") for row in cut.summary_rows())
    assert all(SMOKE in row for row in spoken(1.5, 1.0, smoke=True).summary_rows())


def browsed(
    browser_ms: float, raw_ms: float, app_kb: int, bare_kb: int, smoke: bool = False
) -> web.WebResult:
    sizes = web.Sizes(runs=2, warm_up=1)
    timeline = web.Timeline(5.0, 10.0, 12.0)
    ours = web.Side("browser", [web.Run(browser_ms, timeline)] * 2)
    raw = web.Side("raw", [web.Run(raw_ms)] * 2)
    app = web.Load("app", [web.Chunk("index-AAAAAAAA.js", app_kb * 4_000, app_kb * 1_000)])
    bare = web.Load("bare", [web.Chunk("index-BBBBBBBB.js", bare_kb * 4_000, bare_kb * 1_000)])
    return web.WebResult(sizes, "156", ours, raw, app, bare, smoke)


def test_web_goals_pass_or_fail_on_their_figures_and_fail_when_a_run_broke():
    verdicts = [row.rsplit("|", 2)[1].strip() for row in browsed(60, 15, 560, 550).summary_rows()]
    assert verdicts == ["PASS", "PASS"]
    heavy = browsed(100, 15, 640, 550)  # adds 85 ms, and 16.4 % more JavaScript
    assert "| +85 ms |" in heavy.summary_rows()[0] and "| +16.4 % |" in heavy.summary_rows()[1]
    assert [row.rsplit("|", 2)[1].strip() for row in heavy.summary_rows()] == ["FAIL", "FAIL"]
    failed = browsed(60, 15, 560, 550)
    failed.ours.problems.append("TimeoutError: no answer")
    failed.bare.loaded = []
    assert "browser: TimeoutError: no answer" in failed.broken()
    assert "bare page: no JavaScript loaded" in failed.broken()
    assert all(row.endswith("| FAIL |") for row in failed.summary_rows())
    assert all(SMOKE in row for row in browsed(100, 15, 640, 550, smoke=True).summary_rows())
