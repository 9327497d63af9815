"""Fixtures for the interface tests: the document, the built binary, the fake NeonCRM."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from neon_auth_contract import Contract  # noqa: E402
from neon_auth_harness import FakeNeon, RecordingClient, find_binary  # noqa: E402

# An account of the fake NeonCRM; the key has ':' and characters that need percent-encoding.
ORG = "acme"
KEY = "k:e+y/=%&\u00e9-test"
OTHER_KEY = "wrong-key"


@pytest.fixture(scope="session")
def contract() -> Contract:
    return Contract()


@pytest.fixture(scope="session")
def binary() -> Path:
    path = find_binary()
    if path is None or not path.exists():
        pytest.skip("no neon-auth binary: set NEON_AUTH_BIN or run `swift build` "
                    "(looked for .build/debug/neon-auth and .build/release/neon-auth)")
    return path


@pytest.fixture
def fake():
    server = FakeNeon([(ORG, KEY)])
    try:
        yield server
    finally:
        server.control("release")
        server.stop()


@pytest.fixture
def isolated_env(tmp_path: Path) -> dict[str, str]:
    """Environment that keeps the binary away from the user's own credentials."""
    config = tmp_path / "config"
    config.mkdir()
    return {
        "NEON_ORG_ID": "",
        "NEON_API_KEY": "",
        "NEON_AUTH_CREDENTIALS": str(tmp_path / "credentials.json"),
        "XDG_CONFIG_HOME": str(config),
        "HOME": str(tmp_path),
        "NEON_AUTH_LOG_LEVEL": "error",
        # A private agent: no test meets a user's shared agent or leaves one behind.
        "NEON_AUTH_AGENT": "private",
    }


@pytest.fixture
def start_client(binary: Path, fake: FakeNeon, isolated_env: dict[str, str], tmp_path: Path, contract: Contract):
    """Starts recording clients against the fake; checks every exchange at teardown."""
    clients: list[RecordingClient] = []
    logs = []

    def start(*extra_args: str, env: dict[str, str] | None = None, timeout: float = 30) -> RecordingClient:
        log = open(tmp_path / f"neon-auth-{len(clients)}.stderr", "wb")
        logs.append(log)
        client = RecordingClient(binary, args=[*fake.args(), *extra_args],
                                 env={**isolated_env, **(env or {})}, stderr=log, timeout=timeout)
        clients.append(client)
        return client

    yield start
    problems = []
    for n, client in enumerate(clients):
        client.close(timeout=15)
        lines = client.transcript_lines()
        (tmp_path / f"transcript-{n}.jsonl").write_text("".join(line + "\n" for line in lines), encoding="utf-8")
        problems += contract.transcript_errors(lines, source=f"client {n}")[1]
    for log in logs:
        log.close()
    assert not problems, "responses that do not match schemas/openrpc.json:\n" + "\n".join(problems)


def pytest_report_header(config):
    path = find_binary()
    return f"neon-auth binary: {path if path and path.exists() else 'not found'}"
