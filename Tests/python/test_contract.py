"""The validators in neon_auth_contract.py catch what they should (so passing transcripts mean something)."""

from __future__ import annotations

import json

import pytest

from neon_auth_contract import Contract

SIGN = '{"jsonrpc":"2.0","id":1,"method":"sign","params":{"orgId":"acme","apiKey":"k"}}'
SIGNED = {"authorization": "Basic YWNtZTpr", "headers": {"Authorization": "Basic YWNtZTpr", "NEON-API-VERSION": "2.11"},
          "baseUrl": "https://api.neoncrm.com/v2"}
CLOSE = '{"jsonrpc":"2.0","id":"c","method":"closeSession","params":{"userSessionId":"x"}}'


def ok(id_, result):
    return json.dumps({"jsonrpc": "2.0", "id": id_, "result": result})


def err(id_, code, message="m", data=None):
    error = {"code": code, "message": message}
    if data is not None:
        error["data"] = data
    return json.dumps({"jsonrpc": "2.0", "id": id_, "error": error})


CASES = [
    ("sign result", SIGN, ok(1, SIGNED), True),
    ("sign result with an extra member", SIGN, ok(1, {**SIGNED, "expires": 0}), False),
    ("sign result without baseUrl", SIGN, ok(1, {k: v for k, v in SIGNED.items() if k != "baseUrl"}), False),
    ("sign result with a bearer token", SIGN, ok(1, {**SIGNED, "authorization": "Bearer x"}), False),
    ("sign answering -32602 with data.field", SIGN, err(1, -32602, data={"field": "orgId"}), True),
    ("sign answering -32602 without data", SIGN, err(1, -32602), True),
    ("sign answering -32602 with a value in data", SIGN, err(1, -32602, data={"field": "orgId", "value": "acme"}), False),
    ("sign answering -32010 (not documented for sign)", SIGN, err(1, -32010), False),
    ("sign answering -32001 (only openSession contacts NeonCRM)", SIGN,
     err(1, -32001, data={"errors": [], "retryable": False}), False),
    ("sign answering -32022 with its data", SIGN, err(1, -32022, data={"profiles": ["p"]}), True),
    ("sign answering -32022 without data", SIGN, err(1, -32022), False),
    ("closeSession -32010", CLOSE, err("c", -32010), True),
    ("closeSession -32010 with data", CLOSE, err("c", -32010, data={}), False),
    ("closeSession result", CLOSE, ok("c", {"closed": True, "loggedOut": False}), True),
    ("closeSession result closed false", CLOSE, ok("c", {"closed": False, "loggedOut": False}), False),
    ("error with an empty message", CLOSE, err("c", -32010, message=""), False),
    ("error with an extra member", CLOSE, json.dumps({"jsonrpc": "2.0", "id": "c", "error": {"code": -32010, "message": "m", "x": 1}}), False),
    ("envelope with an extra member", CLOSE, json.dumps({"jsonrpc": "2.0", "id": "c", "result": {"closed": True, "loggedOut": False}, "x": 1}), False),
    ("envelope with result and error", CLOSE, json.dumps({"jsonrpc": "2.0", "id": "c", "result": None, "error": {"code": -32603, "message": "m"}}), False),
    ("envelope without jsonrpc", CLOSE, json.dumps({"id": "c", "result": {"closed": True, "loggedOut": False}}), False),
    ("id that matches no request", CLOSE, err("d", -32010), False),
    ("parse error for unreadable input", "{", err(None, -32700), True),
    ("result for unreadable input", "{", ok(None, None), False),
    ("invalid request with data.limit", "x" * 100, err(None, -32600, data={"limit": 64}), True),
    ("empty batch", "[]", err(None, -32600), True),
    ("undocumented method -32601", '{"jsonrpc":"2.0","id":2,"method":"login"}', err(2, -32601), True),
    ("undocumented method answered -32602", '{"jsonrpc":"2.0","id":2,"method":"login"}', err(2, -32602, data={"field": "x"}), False),
    ("undocumented method answered a result", '{"jsonrpc":"2.0","id":2,"method":"login"}', ok(2, {}), False),
    ("batch", "[%s,1,%s]" % (SIGN, CLOSE),
     "[%s,%s,%s]" % (ok(1, SIGNED), err(None, -32600), err("c", -32011)), True),
    ("batch with a wrong entry", "[%s,%s]" % (SIGN, CLOSE),
     "[%s,%s]" % (ok(1, SIGNED), ok("c", SIGNED)), False),
    ("array answering a single request", SIGN, "[%s]" % ok(1, SIGNED), False),
    ("response that is not JSON", SIGN, "{oops", False),
    ("LSP-framed exchange", "Content-Length: %d\r\n\r\n%s" % (len(SIGN), SIGN),
     "Content-Length: 9\r\n\r\n" + ok(1, SIGNED), True),
    ("request with a BOM", "\ufeff" + SIGN, ok(1, SIGNED), True),
    ("initialize", '{"jsonrpc":"2.0","id":3,"method":"initialize","params":{}}',
     ok(3, {"capabilities": {}, "serverInfo": {"name": "neon-auth", "version": "0.1.0"}}), True),
    ("status with a session ID in it", '{"jsonrpc":"2.0","id":4,"method":"status"}',
     ok(4, {"uptimeSeconds": 1, "sessions": [{"orgId": "a", "profile": None, "environment": "custom", "holders": 1,
                                             "ageSeconds": 1, "idleSeconds": 0, "refreshing": False, "current": True,
                                             "userSessionId": "123"}],
            "counters": {"logins": 1, "loginFailures": 0, "reuses": 0, "replaces": 0, "logouts": 0,
                         "logoutFailures": 0, "signs": 0, "errors": {}}}), False),
]


@pytest.mark.parametrize("name,request_text,response_text,valid", CASES, ids=[c[0] for c in CASES])
def test_exchange(name, request_text, response_text, valid, contract: Contract):
    problems = contract.exchange_errors(request_text, response_text)
    assert (not problems) is valid, problems


def test_rpc_discover_result_must_be_the_document(contract: Contract):
    request = '{"jsonrpc":"2.0","id":5,"method":"rpc.discover"}'
    assert not contract.exchange_errors(request, ok(5, contract.doc))
    changed = json.loads(json.dumps(contract.doc))
    changed["methods"] = changed["methods"][:1]
    assert contract.exchange_errors(request, ok(5, changed))


def test_transcript_lines(contract: Contract):
    lines = [
        json.dumps({"request": SIGN, "response": ok(1, SIGNED)}),
        "",
        json.dumps({"request": '{"jsonrpc":"2.0","method":"sign"}', "response": None}),
        json.dumps({"request": CLOSE, "response": err("c", -32010)}),
    ]
    assert contract.transcript_errors(lines) == (3, [])
    count, problems = contract.transcript_errors(lines + ["not json", json.dumps({"request": SIGN})])
    assert count == 3 and len(problems) == 2
    count, problems = contract.transcript_errors([json.dumps({"request": SIGN, "response": err(1, -32010)})], "t.jsonl")
    assert count == 1 and problems and problems[0].startswith("t.jsonl:1: ")
