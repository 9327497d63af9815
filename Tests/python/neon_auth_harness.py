"""Running the built neon-auth for the tests: finding it, a recording client, the fake NeonCRM.

The recording client is the bundled Python client (scripts/neon_auth.py) with
every request it writes and every response it reads kept as an exchange
({"request": text, "response": text}), the transcript format the Swift
end-to-end tests write to $NEON_AUTH_TRANSCRIPT. It can also write raw lines
(malformed JSON, batches, over-long lines) that the client's API cannot.
"""

from __future__ import annotations

import json
import os
import queue
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

from neon_auth_contract import REPO

sys.path.insert(0, str(REPO / "scripts"))
from neon_auth import NeonAuth, NeonAuthError  # noqa: E402
import fake_neoncrm  # noqa: E402

__all__ = ["find_binary", "RecordingClient", "NeonAuthError", "FakeNeon", "spawn_raw", "read_lsp_message"]


def find_binary() -> Path | None:
    """$NEON_AUTH_BIN, else .build/debug/neon-auth, else .build/release/neon-auth."""
    from_env = os.environ.get("NEON_AUTH_BIN")
    if from_env:
        return Path(from_env)
    for config in ("debug", "release"):
        candidate = REPO / ".build" / config / "neon-auth"
        if candidate.exists():
            return candidate
    return None


def _compact(message: Any) -> str:
    return json.dumps(message, ensure_ascii=False, separators=(",", ":"))


class RecordingClient(NeonAuth):
    """NeonAuth that records exchanges and can send raw lines.

    Calls through the client API use integer ids; raw lines should use string
    ids (or none) so their answers go to :meth:`send_raw`'s inbox.
    """

    def __init__(self, *args: Any, **kwargs: Any):
        self.exchanges: list[dict[str, Any]] = []
        self._requests_by_id: dict[int, str] = {}
        self._record_lock = threading.Lock()
        self._inbox: "queue.Queue[Any]" = queue.Queue()
        super().__init__(*args, **kwargs)

    # The client's writes: remember the text by id to pair it with its answer.
    def _write(self, message: dict[str, Any]) -> None:
        if isinstance(message.get("id"), int):
            with self._record_lock:
                self._requests_by_id[message["id"]] = _compact(message)
        super()._write(message)

    def _dispatch(self, msg: Any) -> None:
        msg_id = msg.get("id") if isinstance(msg, dict) else None
        client_call = isinstance(msg_id, int) and not isinstance(msg_id, bool)
        if client_call:
            with self._record_lock:
                request = self._requests_by_id.pop(msg_id, None)
            if request is not None:
                self._record(request, msg)
            super()._dispatch(msg)
        else:
            self._inbox.put(msg)

    def _record(self, request: str, response: Any) -> None:
        with self._record_lock:
            self.exchanges.append({"request": request, "response": _compact(response)})

    def send_raw(self, text: str | bytes, expect_response: bool = True, timeout: float = 15) -> Any:
        """Writes one raw line (a newline is added) and returns the next raw answer.

        With ``expect_response=False`` it checks that nothing arrives for a
        short while and returns None.
        """
        data = text.encode("utf-8") if isinstance(text, str) else text
        with self._write_lock:
            self._proc.stdin.write(data + b"\n")
            self._proc.stdin.flush()
        if not expect_response:
            try:
                got = self._inbox.get(timeout=0.5)
            except queue.Empty:
                return None
            raise AssertionError(f"expected no answer, got {got!r}"[:500])
        try:
            answer = self._inbox.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(f"no answer within {timeout}s to {data[:200]!r}") from None
        request = data.decode("utf-8", "replace") if len(data) <= 4096 else f"<{len(data)} bytes>"
        self._record(request, answer)
        return answer

    def call_code(self, method: str, /, **params: Any) -> tuple[Any, int | None, Any]:
        """(result, None, None) on success, (None, code, error data) on an error answer."""
        try:
            return self.call(method, **params), None, None
        except NeonAuthError as exc:
            if exc.code is None:
                raise
            return None, exc.code, exc.data

    def transcript_lines(self) -> list[str]:
        with self._record_lock:
            return [json.dumps(e, ensure_ascii=False) for e in self.exchanges]


class FakeNeon:
    """The fake NeonCRM (scripts/fake_neoncrm.py) in this process, with its control API."""

    def __init__(self, accounts: list[tuple[str, str]]):
        self.server, self.thread = fake_neoncrm.start_server(accounts=accounts)
        info = self.server.info()
        self.base, self.v1, self.v2 = info["base"], info["v1"], info["v2"]

    def control(self, op: str, body: dict[str, Any] | None = None) -> Any:
        """POST /_control/<op> with a JSON body; returns the decoded answer."""
        request = urllib.request.Request(
            f"{self.base}/_control/{op}", data=json.dumps(body or {}).encode("utf-8"),
            headers={"Content-Type": "application/json"}, method="POST")
        with urllib.request.urlopen(request, timeout=10) as answer:
            return json.loads(answer.read())

    def mode(self, **modes: Any) -> Any:
        return self.control("mode", modes)

    def args(self) -> list[str]:
        return ["--v1-base-url", self.v1, "--v2-base-url", self.v2]

    def stop(self) -> None:
        self.server.stop()


def spawn_raw(binary: Path, args: list[str] = (), env: dict[str, str] | None = None,
              stderr: Any = subprocess.DEVNULL) -> subprocess.Popen:
    full_env = dict(os.environ)
    full_env.update(env or {})
    return subprocess.Popen([str(binary), *args], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=stderr, env=full_env)


def reap(proc: subprocess.Popen) -> None:
    """Kills `proc` if it still runs, waits for it and closes its pipes (test clean-up)."""
    if proc.poll() is None:
        proc.kill()
    proc.wait()
    for stream in (proc.stdout, proc.stdin):
        if stream is not None:
            stream.close()


def read_lsp_message(stream: Any, timeout: float = 10) -> bytes:
    """Reads one Content-Length framed message body from a binary stream."""
    result: "queue.Queue[Any]" = queue.Queue()

    def read() -> None:
        try:
            length = None
            while True:
                line = stream.readline()
                if not line:
                    raise EOFError("end of output inside a header block")
                line = line.rstrip(b"\r\n")
                if not line:
                    if length is None:
                        continue
                    break
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value.strip())
            result.put(stream.read(length))
        except Exception as exc:  # reported to the caller
            result.put(exc)

    threading.Thread(target=read, daemon=True).start()
    try:
        got = result.get(timeout=timeout)
    except queue.Empty:
        raise AssertionError(f"no LSP-framed message within {timeout}s") from None
    if isinstance(got, Exception):
        raise got
    return got


def wait_exit(proc: subprocess.Popen, timeout: float) -> int | None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        code = proc.poll()
        if code is not None:
            return code
        time.sleep(0.05)
    return None
