#!/usr/bin/env python3
"""sign_ref.py: neon-auth's `sign` as a user would write it in Python.

One request per line: json.loads, base64 of orgId:apiKey, json.dumps of the
response (compact separators).  stdin is read in big chunks; the responses to
a chunk are written with one os.write (so each chunk's answers are flushed
before the next read).  Reference program for scripts/bench.
"""
import base64
import json
import os
import sys

API_VERSION = "2.11"
BASE_URL = "https://api.neoncrm.com/v2"


def answer(line: bytes) -> str:
    try:
        request = json.loads(line)
        params = request["params"]
        pair = (params["orgId"] + ":" + params["apiKey"]).encode("utf-8")
    except (ValueError, KeyError, TypeError):
        return json.dumps({"jsonrpc": "2.0", "id": None,
                           "error": {"code": -32602, "message": "Invalid params"}},
                          separators=(",", ":"))
    authorization = "Basic " + base64.b64encode(pair).decode("ascii")
    return json.dumps({"jsonrpc": "2.0", "id": request.get("id"),
                       "result": {"authorization": authorization,
                                  "headers": {"Authorization": authorization,
                                              "NEON-API-VERSION": API_VERSION},
                                  "baseUrl": BASE_URL}},
                      separators=(",", ":"))


def write_all(data: bytes) -> None:
    view = memoryview(data)
    while view:
        n = os.write(1, view)
        view = view[n:]


def main() -> int:
    stdin = sys.stdin.buffer
    carry = b""
    while True:
        chunk = stdin.read1(1 << 16)
        if not chunk:
            break
        lines = (carry + chunk).split(b"\n")
        carry = lines.pop()
        out = [answer(line) for line in lines if line.strip()]
        if out:
            out.append("")
            write_all("\n".join(out).encode("utf-8"))
    if carry.strip():
        write_all((answer(carry) + "\n").encode("utf-8"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
