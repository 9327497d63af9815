"""Responses of the running binary against the document.

- test_swift_end_to_end_transcript checks the transcript the Swift end-to-end
  tests write to $NEON_AUTH_TRANSCRIPT (JSON lines of {"request", "response"}).
- The other tests make their own transcript: they drive the binary through the
  bundled Python client (scripts/neon_auth.py) against the fake NeonCRM
  (scripts/fake_neoncrm.py), provoke every error they can, and assert the code
  they expect. Each exchange is checked against the document when the test
  ends (conftest.start_client), and the transcript is written to the test's
  tmp_path as transcript-N.jsonl.

Not provoked here: -32603 (internal error: no way to cause one from outside)
and -32005 (shutting down: the process exits before the abandoned call's
answer can be read).
"""

from __future__ import annotations

import base64
import json
import os
from pathlib import Path
from typing import Any

import pytest

from conftest import KEY, ORG, OTHER_KEY
from neon_auth_contract import Contract


def basic(org: str, key: str) -> str:
    return "Basic " + base64.b64encode(f"{org}:{key}".encode("utf-8")).decode("ascii")


NO_DATA = object()


def expect_error(client, code: int, method: str, field: Any = None, **params):
    """Calls and asserts the error code; ``field``: the expected data.field, or NO_DATA."""
    _, got, data = client.call_code(method, **params)
    assert got == code, f"{method} with params {sorted(params)}: expected error {code}, got {got}"
    if field is NO_DATA:
        assert data is None, f"{method}: expected no error data, got {data!r}"
    elif field is not None:
        assert (data or {}).get("field") == field
    return data


def expect_ok(client, method: str, **params):
    result, code, _ = client.call_code(method, **params)
    assert code is None, f"{method} with params {sorted(params)}: expected a result, got error {code}"
    return result


def raw(client, message, **kwargs):
    text = message if isinstance(message, (str, bytes)) else json.dumps(message)
    return client.send_raw(text, **kwargs)


# -- the Swift end-to-end tests' transcript ---------------------------------------

def test_swift_end_to_end_transcript(contract: Contract):
    path = os.environ.get("NEON_AUTH_TRANSCRIPT")
    if not path:
        pytest.skip("NEON_AUTH_TRANSCRIPT is not set (the Swift end-to-end tests write their exchanges there)")
    if not Path(path).is_file():
        pytest.skip(f"no transcript at {path} (NEON_AUTH_TRANSCRIPT): run the Swift end-to-end tests first")
    with open(path, encoding="utf-8") as lines:
        count, problems = contract.transcript_errors(lines, source=Path(path).name)
    assert count > 0, f"{path} holds no exchange"
    assert not problems, f"{len(problems)} of {count} exchanges do not match schemas/openrpc.json:\n" + "\n".join(problems[:50])


# -- exchanges made here ------------------------------------------------------------

def test_sign(start_client, fake):
    client = start_client()
    signed = expect_ok(client, "sign", orgId=ORG, apiKey=KEY)
    assert signed["authorization"] == basic(ORG, KEY) == signed["headers"]["Authorization"]
    assert signed["headers"]["NEON-API-VERSION"] == "2.11"
    assert signed["baseUrl"] == fake.v2
    assert expect_ok(client, "sign", orgId=ORG, apiKey=KEY, apiVersion="2.3")["headers"]["NEON-API-VERSION"] == "2.3"
    expect_ok(client, "sign", orgId=ORG, apiKey=KEY, apiVersion=None)
    expect_error(client, -32602, "sign", "apiKey", orgId=ORG)
    expect_error(client, -32602, "sign", "orgId", orgId="a:b", apiKey=KEY)
    expect_error(client, -32602, "sign", "orgId", orgId="", apiKey=KEY)
    expect_error(client, -32602, "sign", "orgId", orgId=" acme", apiKey=KEY)
    expect_error(client, -32602, "sign", "apiKey", orgId=ORG, apiKey="k\n")
    expect_error(client, -32602, "sign", "apiKey", orgId=ORG, apiKey="k\u0000y")
    expect_error(client, -32602, "sign", "apiVersion", orgId=ORG, apiKey=KEY, apiVersion="3.0")
    expect_error(client, -32602, "sign", NO_DATA, orgId=ORG, apikey=KEY)
    expect_error(client, -32602, "sign", "orgId", orgId=5, apiKey=KEY)
    answer = raw(client, {"jsonrpc": "2.0", "id": "positional", "method": "sign", "params": [ORG, KEY]})
    assert answer["error"]["code"] == -32602 and "data" not in answer["error"]


def test_sessions(start_client):
    client = start_client()
    first = expect_ok(client, "openSession", orgId=ORG, apiKey=KEY)
    assert first["reused"] is False
    second = expect_ok(client, "openSession", orgId=ORG, apiKey=KEY)
    assert second == {"userSessionId": first["userSessionId"], "reused": True}
    sid = first["userSessionId"]
    assert expect_ok(client, "closeSession", userSessionId=sid) == {"closed": True, "loggedOut": False}
    expect_ok(client, "closeSession", userSessionId=sid, logout=None)
    expect_error(client, -32011, "closeSession", userSessionId=sid)
    expect_error(client, -32010, "closeSession", userSessionId="not-a-session")
    expect_error(client, -32602, "closeSession", "userSessionId", userSessionId="")
    expect_error(client, -32602, "closeSession", "userSessionId")
    expect_error(client, -32602, "closeSession", "logout", userSessionId=sid, logout="yes")
    third = expect_ok(client, "openSession", orgId=ORG, apiKey=KEY)
    replaced = expect_ok(client, "openSession", orgId=ORG, apiKey=KEY, replace=third["userSessionId"])
    assert replaced["userSessionId"] != third["userSessionId"]
    assert expect_ok(client, "closeSession", userSessionId=replaced["userSessionId"], logout=True) == \
        {"closed": True, "loggedOut": True}
    expect_error(client, -32010, "closeSession", userSessionId=replaced["userSessionId"])
    expect_error(client, -32602, "openSession", "replace", orgId=ORG, apiKey=KEY, replace=7)
    expect_error(client, -32602, "openSession", NO_DATA, orgId=ORG, apiKey=KEY, apiVersion="2.11")


@pytest.mark.parametrize("mode,codes", [
    ("http500", {-32002}),
    ("http429", {-32002}),
    ("error1", {-32002}),
    ("error2", {-32002}),
    ("reset", {-32002, -32003}),
    ("html", {-32004}),
    ("empty", {-32004}),
    ("nonjson", {-32004}),
    ("success_no_id", {-32004}),
    ("hang", {-32003}),
    ("fail", {-32001}),
])
def test_login_faults(mode, codes, start_client, fake):
    client = start_client("--http-timeout", "2")
    fake.mode(login=mode)
    try:
        _, code, _ = client.call_code("openSession", orgId=ORG, apiKey=KEY)
    finally:
        fake.mode(login="ok")
        fake.control("release")
    assert code in codes, f"login mode {mode}: expected {sorted(codes)}, got {code}"


def test_wrong_key(start_client):
    client = start_client()
    expect_error(client, -32001, "openSession", orgId=ORG, apiKey=OTHER_KEY)
    # Asked again at once: answered from the rejection cache (data.cached) or by NeonCRM again.
    expect_error(client, -32001, "openSession", orgId=ORG, apiKey=OTHER_KEY)
    expect_ok(client, "openSession", orgId=ORG, apiKey=KEY)


def test_transport_errors(start_client):
    client = start_client("--max-message-bytes", "4096")
    sign = {"jsonrpc": "2.0", "method": "sign", "params": {"orgId": ORG, "apiKey": KEY}}
    assert raw(client, "{")["error"]["code"] == -32700
    assert raw(client, b'{"jsonrpc":"2.0","id":"x","method":"sign\xff"}')["error"]["code"] == -32700
    assert raw(client, "[]")["error"]["code"] == -32600
    answer = raw(client, {**sign, "jsonrpc": "1.0", "id": "v1"})
    assert answer["id"] == "v1" and answer["error"]["code"] == -32600
    assert raw(client, {"jsonrpc": "2.0", "id": "m", "method": 5})["error"]["code"] == -32600
    assert raw(client, {**sign, "id": "p", "params": "acme"})["error"]["code"] == -32600
    assert raw(client, {**sign, "id": {"no": 1}})["error"]["code"] == -32600
    long = json.dumps({**sign, "id": "long", "params": {"orgId": "a" * 5000, "apiKey": KEY}})
    answer = raw(client, long)
    assert answer["id"] is None and answer["error"]["code"] == -32600
    assert answer["error"]["data"] == {"limit": 4096}
    assert "result" in raw(client, {**sign, "id": "after-long"}), "the line after a long one is served"
    assert raw(client, {"jsonrpc": "2.0", "id": "nf", "method": "login"})["error"]["code"] == -32601
    answer = raw(client, '{"jsonrpc":"2.0","id":1.50,"method":"sign","params":{"orgId":"acme","apiKey":"k"}}')
    assert answer["id"] == 1.5 and "result" in answer
    batch = raw(client, [
        {**sign, "id": "b1"},
        1,
        sign,
        {"jsonrpc": "2.0", "id": "b2", "method": "closeSession", "params": {"userSessionId": "nope"}},
        {"jsonrpc": "2.0", "id": "b3", "method": "signRequest"},
    ])
    assert isinstance(batch, list) and [r["id"] for r in batch] == ["b1", None, "b2", "b3"]
    assert raw(client, [sign, {"jsonrpc": "2.0", "method": "initialized"}], expect_response=False) is None
    assert raw(client, sign, expect_response=False) is None


def test_lsp_lifecycle(start_client):
    client = start_client()
    init = expect_ok(client, "initialize", processId=None, capabilities={}, rootUri=None)
    assert init["serverInfo"]["name"] == "neon-auth"
    assert expect_ok(client, "initialized") is None
    assert expect_ok(client, "shutdown") is None
    expect_ok(client, "sign", orgId=ORG, apiKey=KEY)


def test_status(start_client):
    client = start_client()
    empty = expect_ok(client, "status")
    assert empty["sessions"] == []
    expect_error(client, -32602, "status", NO_DATA, verbose=True)
    opened = expect_ok(client, "openSession", orgId=ORG, apiKey=KEY)
    expect_ok(client, "sign", orgId=ORG, apiKey=KEY)
    status = expect_ok(client, "status")
    assert [(s["orgId"], s["profile"], s["environment"], s["holders"], s["current"]) for s in status["sessions"]] == \
        [(ORG, None, "custom", 1, True)]
    assert status["counters"]["logins"] == 1 and status["counters"]["signs"] == 1
    assert status["counters"]["errors"] == {"-32602": 1}
    assert KEY not in json.dumps(status) and opened["userSessionId"] not in json.dumps(status)
    assert "result" in raw(client, {"jsonrpc": "2.0", "id": "null-params", "method": "status", "params": None})


def _write_credentials(path: Path, profiles: dict, mode: int = 0o600) -> None:
    path.write_text(json.dumps({"profiles": profiles}), encoding="utf-8")
    path.chmod(mode)


def test_profiles(start_client, isolated_env, fake):
    path = Path(isolated_env["NEON_AUTH_CREDENTIALS"])
    client = start_client()
    data = expect_error(client, -32020, "sign")
    assert str(path) in data["searched"]
    expect_error(client, -32020, "openSession")
    expect_error(client, -32020, "sign", profile="default")
    expect_error(client, -32602, "sign", "profile", profile="sandbox", orgId=ORG, apiKey=KEY)
    expect_error(client, -32602, "sign", "profile", profile="")

    _write_credentials(path, {"sandbox": {"orgId": ORG, "apiKey": KEY}}, mode=0o644)
    data = expect_error(client, -32021, "sign", profile="sandbox")
    assert data["path"] == str(path)

    path.write_text("{not json", encoding="utf-8")
    path.chmod(0o600)
    expect_error(client, -32021, "openSession", profile="sandbox")

    _write_credentials(path, {"sandbox": {"orgId": ORG, "apiKey": KEY, "apiVersion": "2.5"}})
    signed = expect_ok(client, "sign", profile="sandbox")
    assert signed["authorization"] == basic(ORG, KEY)
    assert signed["headers"]["NEON-API-VERSION"] == "2.5"
    assert expect_ok(client, "sign", profile="sandbox", apiVersion="2.7")["headers"]["NEON-API-VERSION"] == "2.7"
    assert expect_error(client, -32022, "sign", profile="nope") == {"profiles": ["sandbox"]}
    expect_error(client, -32022, "openSession", profile="nope")
    expect_error(client, -32020, "sign")  # the file has no 'default' profile
    opened = expect_ok(client, "openSession", profile="sandbox")
    status = expect_ok(client, "status")
    assert [(s["profile"], s["holders"]) for s in status["sessions"]] == [("sandbox", 1)]
    expect_ok(client, "closeSession", userSessionId=opened["userSessionId"])


def test_default_profile_from_environment(start_client):
    client = start_client(env={"NEON_ORG_ID": ORG, "NEON_API_KEY": KEY})
    assert expect_ok(client, "sign")["authorization"] == basic(ORG, KEY)
    assert expect_ok(client, "sign", profile="default")["authorization"] == basic(ORG, KEY)
    assert expect_ok(client, "openSession")["reused"] is False
