"""A well-known JSON-RPC client library against the built binary: pygls 2.x's JsonRPCClient
(LSP framing over the subprocess's stdio). pygls parses every message with a json object_hook,
so any nested object with a "jsonrpc" member is taken for a message of its own: a response
must have none (rpc.discover's document included)."""

from __future__ import annotations

import asyncio
import os

import pytest

pygls_client = pytest.importorskip("pygls.client", reason="pygls is installed by scripts/test")

from conftest import KEY, ORG  # noqa: E402


def _objects(value):
    if isinstance(value, dict):
        yield value
        for v in value.values():
            yield from _objects(v)
    elif isinstance(value, list):
        for v in value:
            yield from _objects(v)


def test_document_has_no_nested_jsonrpc_member(contract):
    nested = [o for o in _objects(contract.doc) if "jsonrpc" in o]
    assert not nested, "an object with a 'jsonrpc' member inside a response breaks pygls"


def test_pygls_client_session(binary, fake, isolated_env, contract):
    env = {**os.environ, **isolated_env}

    async def session():
        client = pygls_client.JsonRPCClient()
        await client.start_io(str(binary), *fake.args(), env=env)
        try:
            discover = await asyncio.wait_for(client.protocol.send_request_async("rpc.discover", {}), 10)
            signed = await asyncio.wait_for(client.protocol.send_request_async(
                "sign", {"orgId": ORG, "apiKey": KEY}), 10)
            opened = await asyncio.wait_for(client.protocol.send_request_async(
                "openSession", {"orgId": ORG, "apiKey": KEY}), 20)
            status = await asyncio.wait_for(client.protocol.send_request_async("status", {}), 10)
            client.protocol.notify("exit", None)
            return discover, signed, opened, status
        finally:
            await asyncio.wait_for(client.stop(), 15)

    discover, signed, opened, status = asyncio.run(session())

    def plain(value):
        # pygls hands back objects as named tuples (renamed fields aside): back to dicts.
        if hasattr(value, "_asdict"):
            return {k: plain(v) for k, v in value._asdict().items()}
        if isinstance(value, (list, tuple)):
            return [plain(v) for v in value]
        return value

    assert plain(discover)["openrpc"] == contract.doc["openrpc"]
    assert plain(discover)["methods"][0]["name"] == contract.doc["methods"][0]["name"]
    assert plain(signed)["authorization"].startswith("Basic ")  # (pygls renames "NEON-API-VERSION")
    assert plain(opened)["reused"] is False
    assert plain(status)["counters"]["logins"] == 1
    assert fake.server.state.stats()["logouts"].get(ORG) == 1
