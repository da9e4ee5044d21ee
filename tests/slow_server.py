"""A small OpenAI-compatible server for tests, on 127.0.0.1 only: every completion waits a fixed time,
then streams the meeting-room answer (the task's exact solver, read from the prompt) in a few chunks.

It counts the requests it is serving at once (``peak_in_flight``), so a test sees from the server's
side that the client overlaps requests. ``mode`` makes it misbehave: ``"500"`` answers every completion
with HTTP 500, ``"drop"`` closes the connection in the middle of every streamed answer, ``"flaky"``
answers every third completion with HTTP 500 and no retry can save it (``fail_ids``).
"""

from __future__ import annotations

import json
import re
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from lrl_harness_tasks.meeting_rooms.solver import max_simultaneous


def solver_answer(prompt: str) -> str:
    meetings = [(int(a), int(b)) for a, b in re.findall(r"\[(\d+)-(\d+)\]", prompt)]
    rooms = re.search(r"Available rooms: (\d+)", prompt)
    if not meetings or not rooms:
        return "Answer: YES"
    peak = max_simultaneous(meetings)
    return f"Peak {peak}. Answer: {'YES' if peak <= int(rooms.group(1)) else 'NO'}"


class SlowServer:
    def __init__(self, delay_s: float = 0.3, mode: str = "ok", deadline_s: float = 120.0):
        self.delay_s, self.mode = delay_s, mode
        self.lock = threading.Lock()
        self.in_flight = self.peak_in_flight = self.completions = 0
        self.authorization: list[str | None] = []
        self.deadline_s = deadline_s
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True  # small SSE writes would otherwise wait for a delayed ACK (~40 ms)

            def log_message(self, *args):
                pass

            def do_GET(self):
                outer.authorization.append(self.headers.get("Authorization"))
                if self.path.rstrip("/").endswith("/models"):
                    self._json(200, {"object": "list", "data": [{"id": "slow", "object": "model"}]})
                else:
                    self._json(404, {"error": {"message": "not found"}})

            def do_POST(self):
                outer.authorization.append(self.headers.get("Authorization"))
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)) or b"{}")
                if not self.path.endswith("/completions"):
                    self._json(404, {"error": {"message": "not found"}})
                    return
                with outer.lock:
                    outer.completions += 1
                    number = outer.completions
                    outer.in_flight += 1
                    outer.peak_in_flight = max(outer.peak_in_flight, outer.in_flight)
                try:
                    time.sleep(outer.delay_s)
                    if outer.mode == "500" or (outer.mode == "flaky" and number % 3 == 0):
                        self._json(500, {"error": {"message": f"internal error on request {number}"}})
                        return
                    self._stream(body)
                finally:
                    with outer.lock:
                        outer.in_flight -= 1

            def _json(self, status: int, document: dict) -> None:
                data = json.dumps(document).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _chunk(self, data: bytes) -> None:
                self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
                self.wfile.flush()

            def _stream(self, body: dict) -> None:
                prompt = body.get("prompt") or (body.get("messages") or [{}])[-1].get("content", "")
                words = solver_answer(prompt).split(" ")
                pieces = [w if i == 0 else " " + w for i, w in enumerate(words)]
                if not body.get("stream"):
                    self._json(200, {"id": "x", "object": "text_completion", "created": 0, "model": "slow",
                                     "choices": [{"index": 0, "text": "".join(pieces), "finish_reason": "stop"}],
                                     "usage": {"prompt_tokens": len(prompt.split()), "completion_tokens": len(pieces),
                                               "total_tokens": len(prompt.split()) + len(pieces)}})
                    return
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream")
                self.send_header("Transfer-Encoding", "chunked")
                self.end_headers()
                for i, piece in enumerate(pieces):
                    event = {"id": "x", "object": "text_completion", "created": 0, "model": "slow",
                             "choices": [{"index": 0, "text": piece,
                                          "finish_reason": "stop" if i == len(pieces) - 1 else None}]}
                    self._chunk(f"data: {json.dumps(event)}\n\n".encode())
                    if outer.mode == "drop" and i == 1:
                        self.close_connection = True
                        self.connection.shutdown(2)  # no terminating chunk: the stream breaks off
                        return
                usage = {"id": "x", "object": "text_completion", "created": 0, "model": "slow", "choices": [],
                         "usage": {"prompt_tokens": len(prompt.split()), "completion_tokens": len(pieces),
                                   "total_tokens": len(prompt.split()) + len(pieces)}}
                self._chunk(f"data: {json.dumps(usage)}\n\ndata: [DONE]\n\n".encode())
                self._chunk(b"")

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.base_url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.timer = threading.Timer(deadline_s, self.httpd.shutdown)  # never outlives a stuck test
        self.timer.daemon = True

    def __enter__(self) -> SlowServer:
        self.thread.start()
        self.timer.start()
        return self

    def __exit__(self, *exc) -> None:
        self.timer.cancel()
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(timeout=5)
