"""The plugin authors' page (docs/plugins.md) runs as written: its backend module, its entry point and
its tests are read from the page itself.

Ollama cannot run on a CPU machine without network, so a stand-in for its ``/api/generate`` serves
on 127.0.0.1: it reads the meetings from the prompt and answers with the task's exact solver. The
backend, the plugin manager, the registry and the pytest plugin are the real ones.
"""

from __future__ import annotations

import importlib.util
import json
import re
import threading
import tomllib
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from lrl_harness import GenerationSettings, ModelSpec, Registry, ServerError, make_plugin_manager
from lrl_harness_tasks.meeting_rooms.solver import max_simultaneous

pytest_plugins = ["pytester"]

PAGE = Path(__file__).resolve().parent.parent / "docs" / "plugins.md"


def page_files() -> dict[str, str]:
    """``{file name: text}`` of every code block the page marks ``<!-- file: NAME -->``."""
    found = re.findall(r"<!-- file: (\S+) -->\n```\w*\n(.*?)```", PAGE.read_text(), flags=re.S)
    return dict(found)


class StandInOllama(BaseHTTPRequestHandler):
    requests: list[dict] = []

    def do_POST(self):  # noqa: N802 (the name http.server calls)
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        StandInOllama.requests.append(body)
        if self.path != "/api/generate":
            self.send_error(404)
            return
        meetings = [(int(a), int(b)) for a, b in re.findall(r"\[(\d+)-(\d+)\]", body["prompt"])]
        rooms = re.search(r"Available rooms: (\d+)", body["prompt"])
        answer = "YES" if not rooms or max_simultaneous(meetings) <= int(rooms.group(1)) else "NO"
        reply = json.dumps({"model": body["model"], "response": f"Answer: {answer}", "done": True,
                            "prompt_eval_count": len(body["prompt"].split()), "eval_count": 3}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(reply)))
        self.end_headers()
        self.wfile.write(reply)

    def log_message(self, *args):
        pass


@pytest.fixture
def ollama_url():
    server = ThreadingHTTPServer(("127.0.0.1", 0), StandInOllama)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    StandInOllama.requests.clear()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.fixture
def backend_module(tmp_path):
    path = tmp_path / "ollama_backend.py"
    path.write_text(page_files()["ollama_backend.py"])
    spec = importlib.util.spec_from_file_location("ollama_backend_from_docs", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_page_marks_every_file_it_shows():
    assert set(page_files()) == {"ollama_backend.py", "pyproject.toml", "test_unit.py", "conftest.py",
                                 "test_gate.py"}


def test_the_backend_registers_and_generates(backend_module, ollama_url):
    registry = Registry(make_plugin_manager(plugins=[backend_module]))
    reg = registry.get("backend", "ollama")
    assert reg.runs == ("server",) and set(reg.option_spec) == {"base_url", "timeout_s"}
    task = registry.get("task", "meeting-rooms").factory()
    problems = task.problems("balanced", "test", 6)
    prompts = [task.student_prompt(p) for p in problems]
    settings = GenerationSettings(max_new_tokens=16)
    done = []
    with registry.open_backend("ollama", ModelSpec("my-student"), {"base_url": ollama_url}) as backend:
        completions = backend.generate(prompts, settings, progress=done.append)
        assert backend.info()["model"] == "my-student"
    assert [task.extract_answer(c.text) for c in completions] == [p.expected for p in problems]
    assert done == [1, 2, 3, 4, 5, 6]
    assert all(c.completion_tokens == 3 and c.prompt_tokens > 0 and c.latency_s > 0 for c in completions)
    sent = StandInOllama.requests[0]
    assert sent["raw"] is True and sent["stream"] is False and sent["prompt"] == prompts[0]
    assert sent["options"]["num_predict"] == 16 and sent["options"]["temperature"] == 0.0


def test_a_server_that_is_not_there_is_one_server_error(backend_module):
    backend = backend_module.OllamaBackend(ModelSpec("my-student"), {"base_url": "http://127.0.0.1:9",
                                                                      "timeout_s": "5"})
    assert backend.options["timeout_s"] == 5.0
    with pytest.raises(ServerError, match="ollama at http://127.0.0.1:9/api/generate"):
        backend.generate(["Problem:"], GenerationSettings())


def test_the_entry_point_names_the_module():
    project = tomllib.loads(page_files()["pyproject.toml"])["project"]
    assert project["entry-points"]["lrl_harness"] == {"ollama": "ollama_backend"}


def test_the_page_tests_pass_with_the_pytest_plugin(pytester, ollama_url, monkeypatch):
    files = page_files()
    monkeypatch.setenv("OLLAMA_URL", ollama_url)
    pytester.syspathinsert()
    pytester.makepyfile(ollama_backend=files["ollama_backend.py"], test_unit=files["test_unit.py"],
                        test_gate=files["test_gate.py"])
    pytester.makeconftest(files["conftest.py"])
    result = pytester.runpytest("-p", "no:cacheprovider")
    result.assert_outcomes(passed=3)
    assert sum(1 for r in StandInOllama.requests if r["model"] == "my-student") == 1 + 200
