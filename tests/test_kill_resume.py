"""SIGKILL a real small `lrl run` at several points, re-run the same command, and compare with an
uninterrupted run: same answers, same figures, same hashes. Also: SIGINT exits 130 with its resume
line; a kill during export leaves no converter running; a truncated results.json is rebuilt.

Run with ``-s`` to see the kill-at-each-stage table (stage, resumed, identical, seconds lost)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow
STEPS = 200  # LoRA steps: long enough to be killed in the middle (a checkpoint every 10)
CODE = "import sys; from lrl_harness.cli.app import main; sys.exit(main(sys.argv[1:]))"


ARGS = []  # filled by the ``arguments`` fixture: the small run, more steps and problems


@pytest.fixture(scope="module", autouse=True)
def arguments(small_run_args):
    ARGS[:] = [small_run_args]


def args_for(out: Path) -> list[str]:
    return [*ARGS[0](out, steps=STEPS), "--test-n", "120"]


def _default_sigint() -> None:
    # A process started in the background of a non-interactive shell inherits SIGINT ignored, and
    # Python then installs no KeyboardInterrupt handler: the run would never see the test's Ctrl-C.
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def start(out: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", CODE, *args_for(out)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True, preexec_fn=_default_sigint)


def finish(out: Path) -> tuple[int, float, str]:
    started = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", CODE, *args_for(out)], capture_output=True, text=True,
                          timeout=900)
    return proc.returncode, time.perf_counter() - started, proc.stderr


def comparable(results: dict) -> dict:
    """What must be equal between an interrupted and an uninterrupted run (no times, no dates)."""
    stages = {name: {"figures": {k: block[k] for k in ("total", "correct", "accuracy", "balanced_accuracy",
                                                       "majority_baseline", "unparsed", "ci95")},
                     "records": [(r["problem_id"], r["response"], r["answer"], r["correct"])
                                 for r in block["results"]]}
              for name, block in results["stages"].items()}
    training = results["training"]
    return {
        "stages": stages,
        "adapter_sha256": results["provenance"]["adapter_sha256"],
        "transfer_sha256": results["provenance"]["transfer_sha256"],
        "strategy_sha256": results["provenance"]["strategy_sha256"],
        "loss_curve": training["loss_curve"], "final_loss": training["final_loss"],
        "merged_sha256": results["export"]["merged_sha256"],
        "gguf": {name: entry["sha256"] for name, entry in results["export"]["files"].items()},
        "parity": {name: {k: c[k] for k in ("answer_agreement", "text_agreement")}
                   for name, c in results["parity"]["comparisons"].items()},
    }


def converters_of(out: Path) -> list[int]:
    """Processes still running llama.cpp's converter on files of ``out``."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().decode(errors="replace")
        except OSError:
            continue
        if "convert_hf_to_gguf" in cmdline and str(out) in cmdline:
            pids.append(int(entry.name))
    return pids


# stage -> (the file whose appearance means that stage is under way, extra delay)
KILL_POINTS = {
    "student_baseline": ("checkpoints/student_baseline.jsonl", 0.0),
    "teacher stages": ("checkpoints/lrl.jsonl", 0.0),
    "lora training": ("checkpoints/lora-training.pt", 1.0),
    "lora evaluation": ("checkpoints/lora.jsonl", 0.0),
    "export": ("export/.export-*", 0.5),
    "parity": ("export/export.json", 0.3),
}


def wait_for(out: Path, pattern: str, proc: subprocess.Popen, limit: float = 600) -> bool:
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        if list(out.glob(pattern)):
            return True
        if proc.poll() is not None:
            return False
        time.sleep(0.02)
    return False


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    out = tmp_path_factory.mktemp("uninterrupted") / "run"
    code, seconds, err = finish(out)
    assert code == 0, err
    return json.loads((out / "results.json").read_text()), seconds


def test_kill_at_each_stage_resumes_to_the_same_results(reference, tmp_path):
    expected, reference_s = reference
    rows = []
    for stage, (pattern, delay) in KILL_POINTS.items():
        out = tmp_path / stage.replace(" ", "-") / "run"
        started = time.perf_counter()
        proc = start(out)
        reached = wait_for(out, pattern, proc)
        time.sleep(delay)
        killed_running = proc.poll() is None
        proc.kill()
        proc.wait()
        killed_s = time.perf_counter() - started
        time.sleep(0.5)
        orphans = converters_of(out)
        code, resumed_s, err = finish(out)
        assert code == 0, f"{stage}: {err}"
        results = json.loads((out / "results.json").read_text())
        identical = comparable(results) == comparable(expected)
        assert identical, stage
        assert not orphans, f"{stage}: converter processes left running: {orphans}"
        assert not list((out / "export").glob(".export-*")), f"{stage}: export work folder left behind"
        for name in results["stages"]:  # no problem counted twice
            ids = [r["problem_id"] for r in results["stages"][name]["results"]]
            assert len(ids) == len(set(ids)), (stage, name)
        assert results["elapsed_s"] >= expected["elapsed_s"] * 0.2
        rows.append((stage, reached and killed_running, identical, killed_s + resumed_s - reference_s,
                     results["training"].get("resumed_at_step")))
    print(f"\nuninterrupted run: {reference_s:.1f} s")
    print("| stage killed | killed mid-stage | resumed | identical | seconds lost | training resumed at step |")
    print("|---|---|---|---|---|---|")
    for stage, mid, identical, lost, step in rows:
        print(f"| {stage} | {'yes' if mid else 'no'} | yes | {'yes' if identical else 'no'} | {lost:.1f} | "
              f"{step or '-'} |")


def test_sigint_prints_the_resume_line_and_exits_130(reference, tmp_path):
    out = tmp_path / "run"
    proc = start(out)
    assert wait_for(out, "checkpoints/lora-training.pt", proc)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert err.strip().splitlines()[-1] == "lrl: interrupted; re-run with the same --out to resume"
    assert not list(out.rglob("*.tmp")), "a half-written file was left behind"
    code, _, err = finish(out)
    assert code == 0, err
    assert comparable(json.loads((out / "results.json").read_text())) == comparable(reference[0])


def test_sigterm_during_export_stops_the_converter(tmp_path):
    out = tmp_path / "run"
    proc = start(out)
    assert wait_for(out, "export/.export-*", proc)
    deadline = time.monotonic() + 30
    while not converters_of(out) and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.02)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode in (143, 0), err
    time.sleep(0.5)
    assert not converters_of(out)


def test_a_truncated_results_file_is_rebuilt_from_the_checkpoints(reference, tmp_path):
    out = tmp_path / "run"
    code, _, err = finish(out)
    assert code == 0, err
    text = (out / "results.json").read_text()
    (out / "results.json").write_text(text[: len(text) // 2])
    code, _, err = finish(out)
    assert code == 0, err
    assert comparable(json.loads((out / "results.json").read_text())) == comparable(reference[0])


def test_elapsed_adds_up_every_invocation(tmp_path):
    out = tmp_path / "run"
    proc = start(out)
    assert wait_for(out, "checkpoints/lora-training.pt", proc)
    time.sleep(1.0)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    first = json.loads((out / "elapsed.json").read_text())["elapsed_s"]
    assert first > 0
    code, _, err = finish(out)
    assert code == 0, err
    assert json.loads((out / "results.json").read_text())["elapsed_s"] > first


def test_a_kill_late_in_training_resumes_near_where_it_stopped(reference, tmp_path):
    import torch

    expected, reference_s = reference
    out = tmp_path / "run"
    started = time.perf_counter()
    proc = start(out)
    checkpoint = out / "checkpoints" / "lora-training.pt"
    step = 0
    while proc.poll() is None and step < 150:
        if checkpoint.is_file():
            try:
                step = torch.load(checkpoint, weights_only=False)["step"]
            except (OSError, RuntimeError, EOFError, KeyError):
                pass
        time.sleep(0.2)
    proc.kill()
    proc.wait()
    killed_s = time.perf_counter() - started
    code, resumed_s, err = finish(out)
    assert code == 0, err
    results = json.loads((out / "results.json").read_text())
    assert results["training"]["resumed_at_step"] >= 150
    assert comparable(results) == comparable(expected)
    print(f"\nkilled at training step {step}+ of {STEPS}: resumed at step {results['training']['resumed_at_step']}, "
          f"identical, {killed_s + resumed_s - reference_s:.1f} s lost (uninterrupted {reference_s:.1f} s)")
