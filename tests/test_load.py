"""``lrl bench`` under load against a real HTTP server on 127.0.0.1 (``slow_server.SlowServer``: a fixed
wait per request, then the task's exact answer, streamed), through the real openai backend and the
real ``lrl`` command: overlap, metrics, goodput, errors, and every bad input ending in one line."""

from __future__ import annotations

import json

import pytest
from lrl_harness.api.errors import ConfigError
from lrl_harness.bench.load import Level, parse_levels, parse_slo
from lrl_harness.bench.performance import bootstrap_ratio, percentile, spread
from lrl_harness.cli.app import main
from lrl_harness.results.io import load_results
from slow_server import SlowServer


def bench(server: SlowServer, out, *args: str, options: str = "") -> int:
    return main(["bench", "--n", args[0], "--target", f"openai=slow,base_url={server.base_url}{options}",
                 "--warmup", "0", "--out", str(out), "-q", *args[1:]])


def level_block(out, key: str) -> dict:
    return load_results(out)["benchmarks"]["backends"]["openai"]["levels"][key]


def test_requests_really_overlap(tmp_path):
    """Concurrency 8, 40 requests of 0.3 s each: far less than 40 x 0.3 s, and 8 really in flight
    (seen by the harness and by the server). Measured in its own process, as the command does."""
    out = tmp_path / "b.json"
    with SlowServer(delay_s=0.3) as server:
        assert bench(server, out, "40", "--concurrency", "8") == 0
        assert server.peak_in_flight == 8
    block = level_block(out, "c=8")
    load = block["load"]
    assert load["requests"] == 40 and load["errors"] == 0 and load["peak_in_flight"] == 8
    # overlap as a ratio within this one run (no wall-clock limit: shared machines are noisy): the
    # requests' own latencies add up to far more than the wall time they took together
    assert load["wall_s"] < sum(r["latency_s"] for r in block["results"]) / 3
    assert block["accuracy"] == 1.0 and block["total"] == 40
    print(f"overlap: 40 requests of 0.3 s at concurrency 8 in {load['wall_s']:.2f} s, "
          f"peak in flight {load['peak_in_flight']} (server saw {server.peak_in_flight})")


def test_sweep_metrics_goodput_and_paired_comparison(tmp_path):
    out = tmp_path / "b.json"
    with SlowServer(delay_s=0.05) as server:
        assert bench(server, out, "12", "--concurrency", "1,4", "--slo", "ttft=0.04,e2e=5", "--repeats", "2",
                     "--in-process") == 0
    data = load_results(out)["benchmarks"]
    entry = data["backends"]["openai"]
    assert entry["reference_level"] == "c=1" and set(entry["levels"]) == {"c=1", "c=4"}
    assert set(data["timing_definitions"]) >= {"ttft", "itl", "tpot", "e2e"} and data["comparability"]["key"]
    for key, block in entry["levels"].items():
        load = block["load"]
        for name in ("e2e", "ttft", "itl", "tpot"):
            d = load[name]
            assert d["p50_s"] <= d["p90_s"] <= d["p99_s"] <= d["max_s"], (key, name)
        assert load["ttft"]["max_s"] <= load["e2e"]["max_s"] and load["ttft"]["mean_s"] <= load["e2e"]["mean_s"]
        assert load["token_source"] == ["server"] and load["output_tokens_per_s"] > 0
        assert load["goodput"]["share_of_requests"] == 0.0  # every request waits 0.05 s > ttft 0.04
        assert block["paired_vs_reference"]["paired"] == 12 and block["paired_vs_reference"]["mcnemar_p"] == 1.0
        assert block["spread"]["requests_per_s"]["n"] == 2
    assert entry["levels"]["c=4"]["load"]["peak_in_flight"] == 4
    assert entry["levels"]["c=1"]["load"]["peak_in_flight"] == 1


def test_poisson_arrivals(tmp_path):
    out = tmp_path / "b.json"
    with SlowServer(delay_s=0.05) as server:
        assert bench(server, out, "10", "--request-rate", "40", "--slo", "e2e=5", "--in-process") == 0
    block = level_block(out, "rate=40")
    assert block["load"]["level"] == {"concurrency": None, "request_rate": 40.0}
    assert block["load"]["goodput"]["share_of_requests"] == 1.0 and block["accuracy"] == 1.0


def test_some_failed_requests_are_counted(tmp_path):
    out = tmp_path / "b.json"
    with SlowServer(delay_s=0.0, mode="flaky") as server:
        assert bench(server, out, "9", "--concurrency", "3", "--in-process", options=",max_retries=0") == 0
    block = level_block(out, "c=3")
    assert block["load"]["errors"] == 3 and block["load"]["retries"] == 0
    failed = [r for r in block["results"] if r.get("error")]
    assert len(failed) == 3 and all("HTTP 500" in r["error"] and r["answer"] is None for r in failed)
    with SlowServer(delay_s=0.0, mode="flaky") as server:
        assert bench(server, out, "9", "--concurrency", "3", "--in-process") == 0
    block = level_block(out, "c=3")
    assert block["load"]["retries"] >= 1 and block["load"]["requests"] == 9


@pytest.mark.parametrize("mode, message", [("500", "HTTP 500 internal error"), ("drop", "the stream broke off")])
def test_a_failing_server_is_one_line_and_nothing_written(tmp_path, capsys, mode, message):
    out = tmp_path / "b.json"
    with SlowServer(delay_s=0.0, mode=mode) as server:
        assert bench(server, out, "3", "--concurrency", "2", "--in-process", options=",max_retries=1") == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("lrl: error: openai at c=2: all 3 requests failed") and message in err
    assert "\n" not in err and not out.exists()


def test_unreachable_server_is_one_line(tmp_path, capsys):
    out = tmp_path / "b.json"
    with SlowServer() as server:
        url = server.base_url
    code = main(["bench", "--n", "2", "--target", f"openai=m,base_url={url},max_retries=0", "--concurrency", "1",
                 "--out", str(out), "-q"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "cannot reach the OpenAI-compatible server" in err and "\n" not in err
    assert not out.exists()


@pytest.mark.parametrize("args, message", [
    (["--concurrency", "x"], "--concurrency takes comma-separated positive integers"),
    (["--concurrency", "0"], "--concurrency values must be positive"),
    (["--concurrency", "1,1"], "lists a value twice"),
    (["--request-rate", "-2"], "--request-rate values must be positive"),
    (["--request-rate", "2", "--concurrency", "1,2"], "at most one --concurrency"),
    (["--concurrency", "2", "--slo", "ttft=fast"], "--slo ttft must be a number"),
    (["--concurrency", "2", "--slo", "speed=1"], "keys ttft, e2e, tpot, itl"),
    (["--slo", "e2e=1"], "--slo needs a load"),
    (["--threads", "0"], "--threads values must be positive"),
    (["--threads", "two"], "--threads takes comma-separated positive integers"),
])
def test_bad_options_are_one_line_before_anything_runs(tmp_path, capsys, args, message):
    out = tmp_path / "b.json"
    code = main(["bench", "--n", "2", "--target", "openai=m,base_url=http://127.0.0.1:9/v1", "--out", str(out),
                 "-q", *args])
    err = capsys.readouterr().err.strip()
    assert code == 2 and message in err and "\n" not in err and not out.exists()


def test_out_must_be_writable_before_measuring(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with SlowServer(delay_s=0.0) as server:
        assert bench(server, blocker / "b.json", "2", "--concurrency", "1") == 2
        assert server.completions == 0
    assert "cannot write" in capsys.readouterr().err


def test_bad_backend_options_are_one_line(tmp_path, capsys):
    with SlowServer(delay_s=0.0) as server:
        for option, message in ((",api=rest", "unknown api 'rest'; option api must be one of completions, chat"),
                                (",timeout_s=-1", "option timeout_s must be a positive number"),
                                (",max_retries=1.5", "option max_retries must be a non-negative integer")):
            assert bench(server, tmp_path / "b.json", "2", "--concurrency", "1", "--in-process",
                         options=option) == 2
            err = capsys.readouterr().err.strip()
            assert message in err and "backend openai" in err and "\n" not in err


def test_chat_endpoint(tmp_path):
    out = tmp_path / "b.json"
    with SlowServer(delay_s=0.0) as server:
        assert bench(server, out, "4", "--concurrency", "2", "--in-process", options=",api=chat") == 0
    assert level_block(out, "c=2")["accuracy"] == 1.0


def test_api_key_never_reaches_the_results(tmp_path, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-secret-123")
    out = tmp_path / "b.json"
    with SlowServer(delay_s=0.0) as server:
        assert bench(server, out, "2", "--concurrency", "1") == 0
        assert "Bearer sk-secret-123" in server.authorization
    assert "sk-secret-123" not in out.read_text()


def test_parsers_and_statistics():
    assert [lv.key for lv in parse_levels("1,4", None)] == ["c=1", "c=4"]
    assert [lv.key for lv in parse_levels("8", "2.5")] == ["rate=2.5,c=8"]
    assert parse_slo("ttft=0.5,e2e=5") == {"ttft": 0.5, "e2e": 5.0}
    with pytest.raises(ConfigError):
        parse_levels("1.5", None)
    assert percentile([0.0, 10.0], 90) == pytest.approx(9.0)
    assert spread([1.0, 3.0, None]) == {"median": 2.0, "min": 1.0, "max": 3.0, "stdev": pytest.approx(1.414214),
                                        "n": 2}
    boot = bootstrap_ratio([2.0, 4.0, 6.0], [1.0, 2.0, 3.0])
    assert boot["ratio"] == 2.0 and boot["ci95"] == [2.0, 2.0]  # every resample keeps the exact ratio
    assert Level(concurrency=4).to_dict() == {"concurrency": 4, "request_rate": None}


def test_check_refuses_a_baseline_measured_elsewhere(tmp_path, capsys):
    out = tmp_path / "b.json"
    with SlowServer(delay_s=0.0) as server:
        assert bench(server, out, "4", "--concurrency", "1", "--in-process") == 0
    other = tmp_path / "other.json"
    data = load_results(out)
    data["benchmarks"]["comparability"] = {"key": "0000", "fields": {**data["benchmarks"]["comparability"]["fields"],
                                                                      "cpu": "another CPU"}}
    other.write_text(json.dumps(data))
    assert main(["check", str(out), "--baseline", str(other), "--latency-ratio", "2"]) == 2
    err = capsys.readouterr().err
    assert "measured on another machine or software" in err and "cpu" in err
    assert main(["check", str(out), "--baseline", str(other)]) == 0  # accuracy alone compares across machines


def test_report_draws_the_load_curve_and_accuracy_against_latency(tmp_path):
    out = tmp_path / "b.json"
    with SlowServer(delay_s=0.02) as fast, SlowServer(delay_s=0.08) as slow:
        assert main(["bench", "--n", "8", "--concurrency", "1,4", "--warmup", "0", "--out", str(out), "-q",
                     "--in-process", "--target", f"fast:openai=slow,base_url={fast.base_url}",
                     "--target", f"slow:openai=slow,base_url={slow.base_url}"]) == 0
    assert main(["report", str(out), "--out", str(tmp_path / "report")]) == 0
    report = tmp_path / "report"
    for name in ("load_curve.png", "accuracy_vs_latency.png", "accuracy_by_backend.png"):
        assert (report / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not (report / "latency_by_backend.png").exists()  # per-problem latency plot: sequential benches only
    markdown = (report / "report.md").read_text()
    assert "Benchmark: under load" in markdown and "| fast | c=4 |" in markdown and "95% bootstrap" in markdown
