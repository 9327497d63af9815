"""The built binary against the document: rpc.discover, method coverage, framing.

Every exchange made here through the recording client is also checked against
the document when the test ends (see conftest.start_client).
"""

from __future__ import annotations

import json
import os
import signal as sig
import subprocess

import pytest

from conftest import KEY, ORG
from neon_auth_contract import Contract
from neon_auth_harness import read_lsp_message, reap, spawn_raw, wait_exit

UNDOCUMENTED = [
    "signRequest", "login", "logout", "Sign", "SIGN", "sign ", "open_session", "opensession",
    "OpenSession", "close_session", "refresh", "getStatus", "discover", "rpc.foo", "rpc.Discover",
    "rpc.describe", "rpc.discover.", "$/cancelRequest", "textDocument/didOpen", "initialise", "",
]


def test_version_matches_document(binary, contract: Contract):
    out = subprocess.run([str(binary), "--version"], capture_output=True, text=True, timeout=10)
    assert out.returncode == 0
    assert out.stdout.strip() == f"neon-auth {contract.doc['info']['version']}"


def test_rpc_discover_returns_the_document(start_client, contract: Contract):
    client = start_client()
    result, code, _ = client.call_code("rpc.discover")
    assert code is None, f"rpc.discover answered error {code}"
    assert result == contract.doc, "rpc.discover must return exactly schemas/openrpc.json"


@pytest.mark.parametrize("name", sorted(Contract().methods))
def test_documented_method_is_served(name, start_client, contract: Contract):
    client = start_client()
    if name == "exit":
        client.notify("exit")
        assert wait_exit(client._proc, 10) == 0, "exit must end the process with status 0"
        return
    # Empty params: every method answers them without touching NeonCRM (the credential
    # methods find no credentials in the isolated environment).
    _, code, _ = client.call_code(name)
    assert code != -32601, f"{name} is documented but the binary answers -32601 (method not found)"


def test_undocumented_methods_are_not_found(start_client, contract: Contract):
    client = start_client()
    wrong = {}
    for name in UNDOCUMENTED:
        assert name not in contract.methods
        _, code, _ = client.call_code(name, orgId=ORG, apiKey=KEY)
        if code != -32601:
            wrong[name] = code
    assert not wrong, f"undocumented names not answered -32601: {wrong}"
    # A notification for an unknown method is ignored: nothing is answered.
    assert client.send_raw(json.dumps({"jsonrpc": "2.0", "method": "rpc.foo"}), expect_response=False) is None


def test_content_length_framing(binary, fake, isolated_env, contract: Contract):
    proc = spawn_raw(binary, [*fake.args()], env=isolated_env)
    try:
        def send(message):
            body = json.dumps(message).encode("utf-8")
            proc.stdin.write(b"Content-Length: %d\r\n\r\n" % len(body) + body)
            proc.stdin.flush()
            return body

        requests = [
            {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {"processId": None, "capabilities": {}}},
            {"jsonrpc": "2.0", "id": 2, "method": "sign", "params": {"orgId": ORG, "apiKey": KEY}},
            {"jsonrpc": "2.0", "id": 3, "method": "sign", "params": {"orgId": ORG}},
            [{"jsonrpc": "2.0", "id": 4, "method": "closeSession", "params": {"userSessionId": "nope"}},
             {"jsonrpc": "2.0", "method": "initialized"}],
            {"jsonrpc": "2.0", "id": 5, "method": "shutdown"},
        ]
        problems = []
        for request in requests:
            sent = send(request)
            answer = read_lsp_message(proc.stdout)
            problems += [f"{request}: {p}" for p in contract.exchange_errors(sent.decode(), answer.decode())]
        send({"jsonrpc": "2.0", "method": "exit"})
        assert wait_exit(proc, 10) == 0
        assert not problems, "\n".join(problems)
    finally:
        reap(proc)


@pytest.mark.parametrize("inherited", ["ignored", "blocked"])
def test_sigterm_is_graceful_whatever_the_parent_left(inherited, binary, fake, isolated_env):
    """A parent may spawn neon-auth with SIGTERM/SIGINT ignored (a background job) or blocked:
    SIGTERM still logs the pooled session out and exits 0."""
    def prepare() -> None:
        if inherited == "ignored":
            sig.signal(sig.SIGTERM, sig.SIG_IGN)
            sig.signal(sig.SIGINT, sig.SIG_IGN)
        else:
            sig.pthread_sigmask(sig.SIG_BLOCK, {sig.SIGTERM, sig.SIGINT})

    full_env = dict(os.environ)
    full_env.update(isolated_env)
    proc = subprocess.Popen([str(binary), *fake.args()], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, env=full_env, preexec_fn=prepare)
    try:
        request = {"jsonrpc": "2.0", "id": 1, "method": "openSession", "params": {"orgId": ORG, "apiKey": KEY}}
        proc.stdin.write(json.dumps(request).encode() + b"\n")
        proc.stdin.flush()
        answer = json.loads(proc.stdout.readline())
        assert answer["result"]["reused"] is False
        proc.send_signal(sig.SIGTERM)
        assert wait_exit(proc, 10) == 0
        assert fake.server.state.stats()["logouts"].get(ORG) == 1
    finally:
        reap(proc)


def _open_session_then(binary, fake, isolated_env, prepare, action):
    """Starts neon-auth (with `prepare` run in the child before exec), opens one session, runs
    `action(proc)`; returns the process (still running or not) for the caller to check."""
    full_env = dict(os.environ)
    full_env.update(isolated_env)
    proc = subprocess.Popen([str(binary), *fake.args()], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, env=full_env, preexec_fn=prepare)
    request = {"jsonrpc": "2.0", "id": 1, "method": "openSession", "params": {"orgId": ORG, "apiKey": KEY}}
    proc.stdin.write(json.dumps(request).encode() + b"\n")
    proc.stdin.flush()
    assert json.loads(proc.stdout.readline())["result"]["reused"] is False
    action(proc)
    return proc


def test_hangup_delivered_twice_is_still_graceful(binary, fake, isolated_env):
    """A terminal hang-up often reaches the foreground job twice (shell and kernel)."""
    def twice(proc):
        proc.send_signal(sig.SIGHUP)
        proc.send_signal(sig.SIGHUP)

    # The test relies on SIGHUP's default disposition: under `nohup` the runner would pass it
    # on ignored, which neon-auth rightly keeps.
    proc = _open_session_then(binary, fake, isolated_env, lambda: sig.signal(sig.SIGHUP, sig.SIG_DFL), twice)
    try:
        assert wait_exit(proc, 10) == 0
        assert fake.server.state.stats()["logouts"].get(ORG) == 1
    finally:
        reap(proc)


def test_nohup_is_respected(binary, fake, isolated_env):
    """Started with SIGHUP ignored (nohup), a hang-up does not stop neon-auth."""
    proc = _open_session_then(binary, fake, isolated_env, lambda: sig.signal(sig.SIGHUP, sig.SIG_IGN),
                              lambda p: p.send_signal(sig.SIGHUP))
    try:
        assert wait_exit(proc, 0.5) is None, "a hang-up stopped a process started under nohup"
        proc.stdin.close()
        assert wait_exit(proc, 10) == 0
        assert fake.server.state.stats()["logouts"].get(ORG) == 1
    finally:
        reap(proc)


def test_terminal_gets_one_hint(binary, isolated_env):
    """A person who starts neon-auth on a terminal is told what to type and how to end."""
    import pty
    leader, follower = pty.openpty()
    full_env = dict(os.environ)
    full_env.update(isolated_env)
    proc = subprocess.Popen([str(binary)], stdin=follower, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=full_env)
    os.close(follower)
    try:
        os.write(leader, b'{"jsonrpc":"2.0","id":1,"method":"rpc.discover"}\n\x04')
        out, err = proc.communicate(timeout=10)
    finally:
        os.close(leader)
        reap(proc)
    assert proc.returncode == 0
    hint = err.decode()
    assert hint.count("\n") == 1 and "one per line" in hint and "Ctrl-D" in hint, hint
    assert json.loads(out.splitlines()[0])["id"] == 1, "stdout stays protocol only"


def test_no_hint_when_stdin_is_not_a_terminal(binary, isolated_env):
    full_env = dict(os.environ)
    full_env.update(isolated_env)
    done = subprocess.run([str(binary)], input=b"", capture_output=True, env=full_env, timeout=10)
    assert done.returncode == 0 and done.stderr == b""


def _sign_lines(count: int) -> bytes:
    return b"".join(b'{"jsonrpc":"2.0","id":%d,"method":"sign","params":{"orgId":"%s","apiKey":"%s"}}\n'
                    % (i, ORG.encode(), KEY.encode()) for i in range(count))


def _ids(output: bytes) -> list[int]:
    return [json.loads(line)["id"] for line in output.splitlines() if line.startswith(b'{"jsonrpc"')]


@pytest.mark.parametrize("log_level", ["warn", "debug"])
def test_client_that_writes_everything_first_with_stderr_in_the_same_pipe(binary, isolated_env, log_level):
    """`neon-auth 2>&1` for a client that writes all its requests before reading any answer:
    the answers written at once must never fill the shared pipe (log lines take room in it
    too), or neon-auth would stop reading and both sides would wait for ever."""
    count = 30_000  # about 3.4 MB in, 8 MB of answers: far more than any pipe holds
    full_env = dict(os.environ)
    full_env.update(isolated_env)
    proc = subprocess.Popen([str(binary), "--log-level", log_level], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, env=full_env)
    try:
        import threading
        done = threading.Event()

        def write_all() -> None:
            proc.stdin.write(_sign_lines(count))
            proc.stdin.close()
            done.set()

        writer = threading.Thread(target=write_all, daemon=True)
        writer.start()
        # Nothing is read until every request is written (or 20 s pass: then neon-auth stopped reading).
        assert done.wait(20), "neon-auth stopped reading its input while its output pipe was not read"
        out = proc.stdout.read()
        assert wait_exit(proc, 20) == 0
    finally:
        reap(proc)
    ids = _ids(out)
    assert sorted(ids) == list(range(count))


def test_answers_through_a_socket_stdout(binary, isolated_env):
    """stdout a Unix socket (as some editors connect a language server): every answer arrives
    whole and once, also when the client reads slowly."""
    import socket
    import threading
    import time
    ours, theirs = socket.socketpair()
    full_env = dict(os.environ)
    full_env.update(isolated_env)
    count = 20_000
    proc = subprocess.Popen([str(binary)], stdin=subprocess.PIPE, stdout=theirs.fileno(), stderr=subprocess.DEVNULL, env=full_env)
    theirs.close()
    try:
        def write_all() -> None:
            proc.stdin.write(_sign_lines(count))
            proc.stdin.close()

        threading.Thread(target=write_all, daemon=True).start()
        chunks = []
        ours.settimeout(20)
        while True:
            chunk = ours.recv(1 << 16)
            if not chunk:
                break
            chunks.append(chunk)
            if len(chunks) % 16 == 0:
                time.sleep(0.002)
        assert wait_exit(proc, 20) == 0
    finally:
        ours.close()
        reap(proc)
    assert sorted(_ids(b"".join(chunks))) == list(range(count))


def _discover_and_sign_lines(rounds: int) -> bytes:
    lines = []
    for r in range(rounds):
        lines.append(b'{"jsonrpc":"2.0","id":"d%d","method":"rpc.discover"}\n' % r)
        lines.extend(b'{"jsonrpc":"2.0","id":%d,"method":"sign","params":{"orgId":"o","apiKey":"k"}}\n' % (r * 100 + j)
                     for j in range(15))
        # Each fails at once (nothing listens) and logs a line, in this process and in its agent.
        lines.extend(b'{"jsonrpc":"2.0","id":"o%d.%d","method":"openSession","params":{"orgId":"o","apiKey":"k"}}\n' % (r, j)
                     for j in range(5))
    return b"".join(lines)


def _check_whole(output: bytes, rounds: int) -> None:
    broken = [line[:120] for line in output.split(b"\n") if line.startswith(b"{") and not _parses(line)]
    assert not broken, f"{len(broken)} answers with something written inside them, e.g. {broken[0]!r}"
    answers = [json.loads(line) for line in output.split(b"\n") if line.startswith(b"{")]
    assert len(answers) == rounds * 21
    logs = [line for line in output.split(b"\n") if line and not line.startswith(b"{")]
    assert all(line.startswith(b"neon-auth") for line in logs), logs[:3]
    assert len(logs) > rounds, "the failing openSession calls should have logged lines among the answers"
    assert any(line.startswith(b"neon-auth: info: exit:") for line in logs), "the exit summary is the last line, written before exit"


def _parses(line: bytes) -> bool:
    try:
        json.loads(line)
        return True
    except ValueError:
        return False


@pytest.mark.parametrize("transport", ["pipe", "socket"])
def test_log_lines_never_land_inside_answers_with_stderr_on_stdout(binary, isolated_env, transport):
    """`neon-auth 2>&1` at debug level, answers far larger than a pipe's page (rpc.discover)
    mixed with small ones, a client that reads slowly in small pieces: every answer is whole,
    and the log lines come between answers."""
    import socket
    import threading
    import time
    rounds = 150
    full_env = dict(os.environ)
    full_env.update(isolated_env)
    argv = [str(binary), "--log-level", "debug", "--agent", "private", "--v1-base-url", "http://127.0.0.1:9/neonws/services/api",
            "--http-timeout", "2", "--connect-timeout", "1"]
    if transport == "socket":
        ours, theirs = socket.socketpair()
        proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=theirs.fileno(), stderr=theirs.fileno(), env=full_env)
        theirs.close()
        ours.settimeout(30)
        read = lambda: ours.recv(3000)
    else:
        proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=full_env)
        read = lambda: os.read(proc.stdout.fileno(), 3000)
    try:
        data = _discover_and_sign_lines(rounds)

        def feed() -> None:
            for k in range(0, len(data), 20000):
                proc.stdin.write(data[k:k + 20000])
                proc.stdin.flush()
                time.sleep(0.002)
            proc.stdin.close()

        threading.Thread(target=feed, daemon=True).start()
        time.sleep(0.5)
        out = bytearray()
        while chunk := read():
            out += chunk
            time.sleep(0.0003)
        assert wait_exit(proc, 30) == 0
    finally:
        if transport == "socket":
            ours.close()
        reap(proc)
    _check_whole(bytes(out), rounds)


def test_exit_summary_reaches_a_slow_reader_with_stderr_on_stdout(binary, isolated_env):
    """`neon-auth 2>&1 | slow reader`: more answers are unread at exit than the pipe holds;
    the log lines that end the run (the exit summary) still come out, after the answers."""
    import time
    full_env = dict(os.environ)
    full_env.update(isolated_env)
    requests = b"".join(b'{"jsonrpc":"2.0","id":%d,"method":"rpc.discover"}\n' % i for i in range(12))
    proc = subprocess.Popen([str(binary), "--log-level", "info"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, env=full_env)
    try:
        proc.stdin.write(requests)
        proc.stdin.close()
        out = bytearray()
        while chunk := os.read(proc.stdout.fileno(), 2048):
            out += chunk
            time.sleep(0.002)
        assert wait_exit(proc, 30) == 0
    finally:
        reap(proc)
    lines = bytes(out).split(b"\n")
    assert sum(line.startswith(b"{") for line in lines) == 12
    assert lines[-2].startswith(b"neon-auth: info: exit:"), lines[-3:]
