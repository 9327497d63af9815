#!/usr/bin/env python3
"""Fake NeonCRM authentication API, for neon-auth's tests. Standard library only.

Reproduces the behaviour described in /work/shared/neoncrm-auth.md:
API v1 sessions (``common/login``, ``common/logout``, ``account/listAccounts``)
and API v2 HTTP Basic auth (any path under ``/v2/``), plus a control API under
``/_control/`` that tests use to inject faults and read counters.

Command line::

    python3 scripts/fake_neoncrm.py [--host 127.0.0.1] [--port 0]
        [--account ORG:KEY ...] [--idle-timeout SECONDS] [--login-delay SECONDS]
        [--session-id-style t13|hex32] [--api-versions 2.1-2.11] [--verbose]
        [--tls-cert FILE --tls-key FILE [--tls-port N] [--tls-require-client-cert]]

When ready it prints exactly one JSON line to stdout and nothing else, ever::

    {"port": N, "base": "http://127.0.0.1:N",
     "v1": "http://127.0.0.1:N/neonws/services/api", "v2": "http://127.0.0.1:N/v2"}

With --tls-cert and --tls-key it also serves https, with that certificate chain, on a second
port of the same host (the same API and state; the control API stays reachable over plain
http at "base"), and the line gains
``"tls": {"port": M, "base": "https://127.0.0.1:M", "v1": ..., "v2": ...}``. The stats count
TLS connections (``tlsConnections``: accepted on the https port, ``tlsHandshakes``: completed,
``tlsHandshakeFailures``: failed, e.g. because the client refused the certificate) and TLS
client hellos that arrived on the plain http port (``tlsOnPlainPort``). With
--tls-require-client-cert every handshake fails: the server demands a client certificate that
no client has (a TLS handshake failure for tests).

In-process use::

    from fake_neoncrm import start_server
    server, thread = start_server(accounts=[("acme", "k:e+y")])
    server.info()["v1"]; server.state.stats(); server.state.counters["logins"]["acme"]
    server.stop()

Nothing here ever logs an API key, a session id or an Authorization header.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import collections
import datetime
import hashlib
import http.server
import io
import ipaddress
import json
import re
import secrets
import signal
import socket
import ssl
import struct
import sys
import threading
import time
import traceback
import urllib.parse
from typing import Any, Iterable

V1_PATH = "/neonws/services/api"
V2_PATH = "/v2"
CONTROL_PATH = "/_control"

# NeonCRM answers with a US Central offset; a non-UTC offset also exercises
# clients' date parsing.
DEFAULT_TZ = datetime.timezone(datetime.timedelta(hours=-6))
HANG_SECONDS = 3600.0
MAX_BODY = 1 << 20
DEFAULT_MODE_DELAY = 1.0

KINDS = ("login", "logout", "data", "v2")
_FAULTS = {"http500", "http429", "html", "empty", "nonjson", "hang", "delay", "reset"}
MODES = {
    "login": {"ok", "fail", "fail_array", "fail_object", "error1", "error2",
              "success_no_id"} | _FAULTS,
    "logout": {"ok", "fail", "fail_object", "error1", "error2"} | _FAULTS,
    "data": {"ok", "fail", "error1", "error2", "error4"} | _FAULTS,
    "v2": {"ok", "http401", "http401_nobody", "http403"} | _FAULTS,
}
# (attempts, successes, failures) counter names per kind of request.
KIND_COUNTERS = {
    "login": ("loginAttempts", "logins", "loginFailures"),
    "logout": ("logoutAttempts", "logouts", "logoutFailures"),
    "data": ("dataCallAttempts", "dataCalls", "dataCallFailures"),
    "v2": ("v2Attempts", "v2Calls", "v2Failures"),
}
COUNTER_NAMES = [n for names in KIND_COUNTERS.values() for n in names] + ["v2Versions"]

V1_ERRORS = {
    "1": "Unexpected system error.",
    "2": "Service not available.",
    "3": "User session id is required.",
    "4": "User session id is invalid.",
    "5": "Invalid login credentials.",
}
V2_ERRORS = {
    "10": "API key is required.",
    "12": "Organization ID is required.",
    "13": "API key is invalid.",
    "14": "Organization ID is invalid.",
}

HTML_500 = (b"<!DOCTYPE html>\n<html><head><title>500 Internal Server Error</title></head>"
            b"<body><h1>Internal Server Error</h1><p>The server encountered an internal "
            b"error.</p></body></html>\n")
HTML_PAGE = (b"<!DOCTYPE html>\n<html><head><title>NeonCRM</title></head><body>"
             b"<h1>Scheduled maintenance</h1><p>NeonCRM will be back shortly.</p>"
             b"</body></html>\n")


# -- helpers -----------------------------------------------------------------

def key_fingerprint(api_key: str) -> str:
    """First 16 hex digits of SHA-256 of the key's UTF-8 bytes (safe to show)."""
    return hashlib.sha256(api_key.encode("utf-8", "surrogatepass")).hexdigest()[:16]


def parse_account(spec: str) -> tuple[str, str]:
    """'ORG:KEY' -> (org, key): the org is everything before the first ':'."""
    org, sep, key = spec.partition(":")
    if not sep or not org or not key:
        raise ValueError("account must be ORG:KEY with a non-empty org and key")
    return org, key


def parse_versions(spec: str) -> frozenset[int]:
    """'2.1-2.11', '2.4' or '2.1,2.3-2.5' -> set of accepted minor versions."""
    minors: set[int] = set()
    for part in spec.split(","):
        part = part.strip()
        m = re.fullmatch(r"2\.(\d+)(?:\s*-\s*2\.(\d+))?", part)
        if not m:
            raise ValueError(f"bad API version range {part!r} (want 2.A-2.B)")
        lo = int(m.group(1))
        hi = int(m.group(2)) if m.group(2) is not None else lo
        if hi < lo:
            raise ValueError(f"empty API version range {part!r}")
        minors.update(range(lo, hi + 1))
    if not minors:
        raise ValueError("no API versions accepted")
    return frozenset(minors)


def format_versions(minors: Iterable[int]) -> list[str]:
    return [f"2.{n}" for n in sorted(minors)]


def _xml(name: str, value: Any) -> str:
    if isinstance(value, list):
        return "".join(_xml(name, v) for v in value)
    if isinstance(value, dict):
        inner = "".join(_xml(k, v) for k, v in value.items())
    else:
        inner = (str(value).replace("&", "&amp;").replace("<", "&lt;")
                 .replace(">", "&gt;"))
    return f"<{name}>{inner}</{name}>"


def _number(value: Any, what: str, minimum: float = 0.0) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < minimum:
        raise ValueError(f"{what} must be a number >= {minimum:g}")
    return float(value)


def _count(value: Any) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError("count must be an integer >= 1")
    return value


class ModeState:
    """One kind's fault mode: applies to the next `remaining` requests (None = until changed)."""

    def __init__(self, mode: str = "ok", remaining: int | None = None,
                 delay: float = DEFAULT_MODE_DELAY) -> None:
        self.mode = mode
        self.remaining = None if mode == "ok" else remaining
        self.delay = delay

    def snapshot(self) -> dict[str, Any]:
        return {"mode": self.mode, "remaining": self.remaining, "delay": self.delay}


class Session:
    __slots__ = ("org", "fingerprint", "last_used")

    def __init__(self, org: str, fingerprint: str, last_used: float) -> None:
        self.org = org
        self.fingerprint = fingerprint
        self.last_used = last_used


# -- state -------------------------------------------------------------------

class FakeNeonState:
    """All mutable state of the fake, guarded by one lock (`self.lock`).

    Counters live in `self.counters[name]` (a Counter keyed by org ID); see
    `stats()` for the meaning of each. Times come from a monotonic clock that
    `advance()` can move forward.
    """

    def __init__(self, accounts: Iterable[tuple[str, str]] = (), idle_timeout: float = 1800.0,
                 login_delay: float = 0.0, session_id_style: str = "t13",
                 api_versions: Iterable[int] | str = range(1, 12),
                 tz: datetime.tzinfo = DEFAULT_TZ) -> None:
        if session_id_style not in ("t13", "hex32"):
            raise ValueError("session_id_style must be t13 or hex32")
        if isinstance(api_versions, str):
            api_versions = parse_versions(api_versions)
        self.lock = threading.Lock()
        self.tz = tz
        # Startup configuration, restored by reset().
        self._initial = {
            "idle_timeout": _number(idle_timeout, "idle timeout"),
            "login_delay": _number(login_delay, "login delay"),
            "session_id_style": session_id_style,
            "api_versions": frozenset(api_versions),
        }
        self.accounts: dict[str, list[str]] = {}   # org -> API keys (one per user)
        self._issued: set[str] = set()             # every session id ever issued
        for org, key in accounts:
            self._add_account_locked(org, key, replace=False)
        with self.lock:
            self._reset_locked()

    # ---- basics
    def _reset_locked(self) -> None:
        init = self._initial
        self.idle_timeout: float = init["idle_timeout"]
        self.session_id_style: str = init["session_id_style"]
        self.api_versions: frozenset[int] = init["api_versions"]
        self.delays = {"login": init["login_delay"], "logout": 0.0, "data": 0.0, "v2": 0.0}
        self.modes = {kind: ModeState() for kind in KINDS}
        self.error_shape = "array"
        self.v2_max_concurrent = 0
        self.clock_offset = 0.0
        self.sessions: dict[str, Session] = {}
        self.retired: dict[str, str] = {}         # logged-out/expired/revoked id -> org
        self.counters = {name: collections.Counter() for name in COUNTER_NAMES}
        self.logins_by_key: collections.Counter = collections.Counter()  # (org, fp)
        self.in_flight = {kind: collections.Counter() for kind in KINDS}
        self.max_in_flight = {kind: collections.Counter() for kind in KINDS}
        self.hanging = 0
        self._hang_release = threading.Event()
        self.tls = collections.Counter()  # connections, handshakes, handshakeFailures, onPlainPort

    def now(self) -> float:
        return time.monotonic() + self.clock_offset

    def now_iso(self) -> str:
        return datetime.datetime.now(self.tz).isoformat(timespec="milliseconds")

    def reset(self) -> None:
        """Clear counters, sessions, modes and runtime settings; keep accounts."""
        with self.lock:
            self._hang_release.set()
            self._reset_locked()

    # ---- accounts
    def _add_account_locked(self, org: str, key: str, replace: bool) -> None:
        if not isinstance(org, str) or not org or ":" in org:
            raise ValueError("orgId must be a non-empty string without ':'")
        if not isinstance(key, str) or not key:
            raise ValueError("apiKey must be a non-empty string")
        keys = self.accounts.setdefault(org, [])
        if replace:
            for old in [k for k in keys if k != key]:
                self._revoke_locked(org, old)
            keys[:] = [k for k in keys if k == key]
        if key not in keys:
            keys.append(key)

    def add_account(self, org: str, key: str, replace: bool = True) -> None:
        with self.lock:
            self._add_account_locked(org, key, replace)

    def remove_account(self, org: str, key: str | None = None) -> int:
        """Remove one key of an org (or every key); their sessions end. Returns keys removed."""
        with self.lock:
            keys = self.accounts.get(org, [])
            gone = [k for k in keys if key is None or k == key]
            for k in gone:
                self._revoke_locked(org, k)
            keys[:] = [k for k in keys if k not in gone]
            if not keys:
                self.accounts.pop(org, None)
            return len(gone)

    def _revoke_locked(self, org: str, key: str) -> None:
        fp = key_fingerprint(key)
        for sid, s in list(self.sessions.items()):
            if s.org == org and s.fingerprint == fp:
                self._retire_locked(sid)

    def check_credentials(self, org: str, key: str) -> str:
        """'ok', 'unknown_org' or 'bad_key'."""
        with self.lock:
            keys = self.accounts.get(org)
            if not keys:
                return "unknown_org"
            return "ok" if key in keys else "bad_key"

    # ---- sessions
    def _retire_locked(self, sid: str) -> None:
        s = self.sessions.pop(sid, None)
        if s is not None:
            self.retired[sid] = s.org

    def _live_locked(self, sid: str) -> Session | None:
        s = self.sessions.get(sid)
        if s is not None and self.now() - s.last_used >= self.idle_timeout:
            self._retire_locked(sid)
            return None
        return s

    def _purge_locked(self) -> None:
        for sid in list(self.sessions):
            self._live_locked(sid)

    def create_session(self, org: str, key: str) -> str:
        with self.lock:
            while True:
                if self.session_id_style == "hex32":
                    sid = secrets.token_hex(16)
                else:
                    sid = "T%013d" % secrets.randbelow(10 ** 13)
                if sid not in self._issued:
                    break
            self._issued.add(sid)
            fp = key_fingerprint(key)
            self.sessions[sid] = Session(org, fp, self.now())
            self.logins_by_key[(org, fp)] += 1
            return sid

    def session_org(self, sid: str | None) -> str | None:
        """Org a session id was issued for (live, expired or logged out), else None."""
        if not sid:
            return None
        with self.lock:
            s = self.sessions.get(sid)
            return s.org if s is not None else self.retired.get(sid)

    def use_session(self, sid: str) -> str | None:
        """Org of a live session, refreshing its idle timer; None if invalid."""
        with self.lock:
            s = self._live_locked(sid)
            if s is None:
                return None
            s.last_used = self.now()
            return s.org

    def end_session(self, sid: str) -> str | None:
        """Log a live session out; returns its org, or None if it was not live."""
        with self.lock:
            s = self._live_locked(sid)
            if s is None:
                return None
            self._retire_locked(sid)
            return s.org

    def drop_session(self, sid: str) -> None:
        with self.lock:
            self._retire_locked(sid)

    def expire(self, org: str | None = None) -> int:
        with self.lock:
            victims = [sid for sid, s in self.sessions.items() if org is None or s.org == org]
            for sid in victims:
                self._retire_locked(sid)
            return len(victims)

    def set_idle_timeout(self, seconds: float) -> None:
        with self.lock:
            self.idle_timeout = _number(seconds, "seconds")

    def advance(self, seconds: float) -> float:
        """Move the fake's clock forward (sessions age without waiting)."""
        with self.lock:
            self.clock_offset += _number(seconds, "seconds")
            return self.clock_offset

    # ---- request accounting
    def begin(self, kind: str, org: str) -> bool:
        """Count an attempt; False if the v2 concurrency limit refuses it."""
        with self.lock:
            self.counters[KIND_COUNTERS[kind][0]][org] += 1
            limit = self.v2_max_concurrent if kind == "v2" else 0
            if limit and self.in_flight[kind][org] >= limit:
                return False
            self.in_flight[kind][org] += 1
            if self.in_flight[kind][org] > self.max_in_flight[kind][org]:
                self.max_in_flight[kind][org] = self.in_flight[kind][org]
            return True

    def end(self, kind: str, org: str, admitted: bool, success: bool) -> None:
        with self.lock:
            if admitted:
                self.in_flight[kind][org] -= 1
                if self.in_flight[kind][org] <= 0:
                    del self.in_flight[kind][org]
            _, ok_name, fail_name = KIND_COUNTERS[kind]
            self.counters[ok_name if success else fail_name][org] += 1

    def count_version(self, version: str) -> None:
        with self.lock:
            self.counters["v2Versions"][version] += 1

    def take_mode(self, kind: str) -> tuple[str, float, float]:
        """(mode, mode delay, permanent delay) for one request of this kind."""
        with self.lock:
            m = self.modes[kind]
            mode, delay = m.mode, m.delay
            if m.remaining is not None:
                m.remaining -= 1
                if m.remaining <= 0:
                    self.modes[kind] = ModeState()
            return mode, delay, self.delays[kind]

    def hang_event(self) -> threading.Event:
        with self.lock:
            self.hanging += 1
            return self._hang_release

    def unhang(self) -> None:
        with self.lock:
            self.hanging -= 1

    def release_hangs(self) -> int:
        with self.lock:
            n = self.hanging
            self._hang_release.set()
            self._hang_release = threading.Event()
            return n

    def version_accepted(self, version: str) -> bool:
        m = re.fullmatch(r"2\.(0|[1-9][0-9]{0,3})", version)
        with self.lock:
            return bool(m) and int(m.group(1)) in self.api_versions

    # ---- modes
    def set_modes(self, body: dict[str, Any]) -> dict[str, Any]:
        allowed = {"count", "delay", "loginDelay", "logoutDelay", "dataDelay", "v2Delay",
                   "errorShape", "apiVersions", "v2MaxConcurrent", "sessionIdStyle", *KINDS}
        unknown = sorted(set(body) - allowed)
        if unknown:
            raise ValueError(f"unknown mode field(s): {', '.join(unknown)}")
        count = _count(body.get("count"))
        delay = body.get("delay")
        delay = None if delay is None else _number(delay, "delay")
        new_modes: dict[str, ModeState] = {}
        for kind in KINDS:
            if kind not in body:
                continue
            spec = body[kind]
            k_count, k_delay = count, delay
            if isinstance(spec, dict):
                extra = set(spec) - {"mode", "count", "delay"}
                if extra:
                    raise ValueError(f"unknown field(s) in {kind}: {', '.join(sorted(extra))}")
                if "count" in spec:
                    k_count = _count(spec["count"])
                if spec.get("delay") is not None:
                    k_delay = _number(spec["delay"], "delay")
                spec = spec.get("mode")
            if spec not in MODES[kind]:
                raise ValueError(f"{kind} mode must be one of: {', '.join(sorted(MODES[kind]))}")
            new_modes[kind] = ModeState(spec, k_count,
                                        DEFAULT_MODE_DELAY if k_delay is None else k_delay)
        new_delays = {}
        for kind in KINDS:
            name = kind + "Delay"
            if body.get(name) is not None:
                new_delays[kind] = _number(body[name], name)
        shape = body.get("errorShape")
        if shape is not None and shape not in ("array", "object"):
            raise ValueError("errorShape must be 'array' or 'object'")
        versions = body.get("apiVersions")
        if versions is not None:
            if not isinstance(versions, str):
                raise ValueError("apiVersions must be a string like '2.1-2.11'")
            versions = parse_versions(versions)
        limit = body.get("v2MaxConcurrent")
        if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int)
                                  or limit < 0):
            raise ValueError("v2MaxConcurrent must be an integer >= 0 (0 = no limit)")
        style = body.get("sessionIdStyle")
        if style is not None and style not in ("t13", "hex32"):
            raise ValueError("sessionIdStyle must be 't13' or 'hex32'")
        with self.lock:
            self.modes.update(new_modes)
            self.delays.update(new_delays)
            if shape is not None:
                self.error_shape = shape
            if versions is not None:
                self.api_versions = versions
            if limit is not None:
                self.v2_max_concurrent = limit
            if style is not None:
                self.session_id_style = style
        return self.mode_snapshot()

    def mode_snapshot(self) -> dict[str, Any]:
        with self.lock:
            out: dict[str, Any] = {kind: self.modes[kind].snapshot() for kind in KINDS}
            for kind in KINDS:
                out[kind + "Delay"] = self.delays[kind]
            out.update({"errorShape": self.error_shape,
                        "apiVersions": format_versions(self.api_versions),
                        "v2MaxConcurrent": self.v2_max_concurrent,
                        "sessionIdStyle": self.session_id_style,
                        "idleTimeout": self.idle_timeout,
                        "clockOffset": self.clock_offset})
            return out

    # ---- reporting
    def stats(self) -> dict[str, Any]:
        """Counters by org ID. X = successes, XAttempts = all requests, XFailures = the rest."""
        with self.lock:
            self._purge_locked()
            c = self.counters
            active = collections.Counter(s.org for s in self.sessions.values())
            active_by_key: dict[str, dict[str, int]] = {}
            for s in self.sessions.values():
                per = active_by_key.setdefault(s.org, {})
                per[s.fingerprint] = per.get(s.fingerprint, 0) + 1
            logins_by_key: dict[str, dict[str, int]] = {}
            for (org, fp), n in self.logins_by_key.items():
                logins_by_key.setdefault(org, {})[fp] = n
            return {
                "logins": dict(c["logins"]),
                "loginAttempts": dict(c["loginAttempts"]),
                "loginFailures": dict(c["loginFailures"]),
                "logouts": dict(c["logouts"]),
                "logoutAttempts": dict(c["logoutAttempts"]),
                "logoutFailures": dict(c["logoutFailures"]),
                "dataCalls": dict(c["dataCalls"]),
                "dataCallAttempts": dict(c["dataCallAttempts"]),
                "dataCallFailures": dict(c["dataCallFailures"]),
                "v2Calls": dict(c["v2Calls"]),
                "v2Attempts": dict(c["v2Attempts"]),
                "v2Failures": dict(c["v2Failures"]),
                "v2Versions": dict(c["v2Versions"]),
                "activeSessions": len(self.sessions),
                "activeByOrg": dict(active),
                "activeByKey": active_by_key,
                "loginsByKey": logins_by_key,
                "inFlight": {k: dict(v) for k, v in self.in_flight.items()},
                "maxConcurrent": {k: dict(v) for k, v in self.max_in_flight.items()},
                "hanging": self.hanging,
                "tlsConnections": self.tls["connections"],
                "tlsHandshakes": self.tls["handshakes"],
                "tlsHandshakeFailures": self.tls["handshakeFailures"],
                "tlsOnPlainPort": self.tls["onPlainPort"],
            }

    def count_tls(self, name: str) -> None:
        with self.lock:
            self.tls[name] += 1

    def accounts_snapshot(self) -> list[dict[str, str]]:
        with self.lock:
            return [{"orgId": org, "keyFingerprint": key_fingerprint(k)}
                    for org, keys in self.accounts.items() for k in keys]

    # ---- log hygiene
    def contains_secret(self, text: str) -> bool:
        with self.lock:
            for keys in self.accounts.values():
                if any(k in text for k in keys):
                    return True
            return any(sid in text for sid in self._issued)

    def loggable_org(self, org: str | None) -> str:
        """An org ID fit for a log line: known, and not also somebody's API key."""
        if not org:
            return "-"
        with self.lock:
            if org not in self.accounts:
                return "?"
            if any(org in keys for keys in self.accounts.values()):
                return "?"
            return org


# -- HTTP --------------------------------------------------------------------

class _Abort(Exception):
    """The response has been dealt with (connection dropped or server stopping)."""


class FakeNeonHandler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "FakeNeonCRM/1.0"
    sys_version = ""
    server: "FakeNeonServer"

    # ---- logging: never the query string, a key, a session id or a header value
    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        pass

    def log_error(self, format: str, *args: Any) -> None:  # noqa: A002
        pass  # send_error's messages may quote the request line

    def log_request(self, code: Any = "-", size: Any = "-") -> None:
        self._logged = True
        self._log(str(int(code)) if isinstance(code, int) else str(code))

    def _log(self, outcome: str) -> None:
        if not self.server.verbose:
            return
        state = self.server.state
        raw = urllib.parse.urlsplit(getattr(self, "path", "") or "").path
        path = raw if raw else "-"
        if state.contains_secret(raw) or state.contains_secret(urllib.parse.unquote(raw)):
            path = "<path redacted>"
        method = self.command if isinstance(self.command, str) else "-"
        org = state.loggable_org(getattr(self, "_log_org", None))
        try:
            sys.stderr.write(f"fake-neoncrm: {method} {path} -> {outcome} org={org}\n")
            sys.stderr.flush()
        except (OSError, ValueError):
            pass

    def send_error(self, code: int, message: str | None = None,
                   explain: str | None = None) -> None:
        """Protocol-level errors: a short JSON body that never echoes the request line."""
        self.close_connection = True
        self._responded = True
        reason = self.responses.get(code, ("Error",))[0]
        body = json.dumps({"error": reason}).encode("utf-8")
        self.send_response(code, reason)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Connection", "close")
        self.end_headers()
        if self.command != "HEAD" and code >= 200 and code not in (204, 304):
            self.wfile.write(body)

    # ---- method entry points
    def do_GET(self) -> None:
        self._dispatch()

    do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = do_OPTIONS = do_GET

    # ---- plumbing
    def _dispatch(self) -> None:
        self._log_org = None
        self._responded = False
        self._logged = False
        try:
            body = self._read_body()
            if body is None:
                return
            path = urllib.parse.urlsplit(self.path).path
            if path.startswith(V1_PATH + "/"):
                self._v1(path[len(V1_PATH) + 1:], body)
            elif path == V2_PATH or path.startswith(V2_PATH + "/"):
                self._v2()
            elif path.startswith(CONTROL_PATH + "/"):
                self._control(path[len(CONTROL_PATH) + 1:], body)
            else:
                self._json(404, {"error": "Not found."})
        except _Abort:
            pass
        except (ConnectionError, socket.timeout):
            self.close_connection = True
        except Exception as exc:  # keep serving; never echo values
            sys.stderr.write(f"fake-neoncrm: internal error: {type(exc).__name__}\n")
            if self.server.verbose:
                sys.stderr.write("".join(traceback.format_tb(exc.__traceback__)))
            if not self._responded:
                try:
                    self._json(500, {"error": "Internal error in the fake."})
                except OSError:
                    self.close_connection = True

    def _read_body(self) -> bytes | None:
        if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
            return self._read_chunked()
        length = self.headers.get("Content-Length")
        if length is None:
            return b""
        try:
            n = int(length)
            if n < 0:
                raise ValueError
        except ValueError:
            self.close_connection = True
            self._json(400, {"error": "Bad Content-Length."})
            return None
        if n > MAX_BODY:
            self.close_connection = True
            self._json(413, {"error": "Body too large."})
            return None
        return self.rfile.read(n)

    def _read_chunked(self) -> bytes | None:
        out = bytearray()
        while True:
            line = self.rfile.readline(1024)
            try:
                size = int(line.split(b";")[0].strip(), 16)
            except ValueError:
                self.close_connection = True
                self._json(400, {"error": "Bad chunked body."})
                return None
            if size == 0:
                while self.rfile.readline(8192) not in (b"\r\n", b"\n", b""):
                    pass
                return bytes(out)
            out += self.rfile.read(size)
            self.rfile.readline(8)
            if len(out) > MAX_BODY:
                self.close_connection = True
                self._json(413, {"error": "Body too large."})
                return None

    def _send(self, status: int, body: bytes = b"", ctype: str | None = "application/json",
              headers: Iterable[tuple[str, str]] = ()) -> None:
        self._responded = True
        self.send_response(status)
        if ctype:
            self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        for name, value in headers:
            self.send_header(name, value)
        self.end_headers()
        if self.command != "HEAD" and body:
            self.wfile.write(body)
        self.wfile.flush()

    def _json(self, status: int, obj: Any) -> None:
        self._send(status, json.dumps(obj, ensure_ascii=False).encode("utf-8"))

    def _drop_connection(self, reset: bool) -> None:
        """Close without answering; with reset, abortively (SO_LINGER 0 -> RST)."""
        self._responded = True
        self.close_connection = True
        if reset:
            try:
                self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                                           struct.pack("ii", 1, 0))
            except OSError:
                pass
        for f in (self.rfile, self.wfile):
            try:
                f.close()
            except (OSError, ValueError):
                pass
        try:
            self.connection.close()
        except OSError:
            pass
        # finish() and handle_one_request() still touch these.
        self.rfile, self.wfile = io.BytesIO(), io.BytesIO()
        if not self._logged:
            self._logged = True
            self._log("reset" if reset else "closed")

    def _wait(self, seconds: float) -> None:
        if seconds > 0 and self.server.stopping.wait(seconds):
            self._drop_connection(reset=False)
            raise _Abort()

    def _hang(self) -> None:
        state = self.server.state
        event = state.hang_event()
        try:
            deadline = time.monotonic() + HANG_SECONDS
            while not event.is_set() and not self.server.stopping.is_set():
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                event.wait(min(left, 0.25))
        finally:
            state.unhang()
        self._drop_connection(reset=False)
        raise _Abort()

    def _common_fault(self, kind: str, mode: str, mode_delay: float) -> bool:
        """Apply a fault mode shared by every kind. True if the response is done."""
        if mode == "delay":
            self._wait(mode_delay)
            return False
        if mode == "hang":
            self._hang()
        if mode == "reset":
            self._drop_connection(reset=True)
            return True
        if mode == "http500":
            self._send(500, HTML_500, "text/html; charset=utf-8")
        elif mode == "http429":
            if kind == "v2":
                self._json(429, [{"code": "429", "message": "Too many simultaneous requests."}])
            else:
                self._send(429, b"Too Many Requests\n", "text/plain; charset=utf-8",
                           [("Retry-After", "1")])
        elif mode == "html":
            self._send(200, HTML_PAGE, "text/html; charset=utf-8")
        elif mode == "empty":
            self._send(200, b"", "application/json")
        elif mode == "nonjson":
            self._send(200, b"not json", "application/json")
        else:
            return False
        return True

    # ---- API v1
    def _v1_params(self, body: bytes) -> dict[str, str]:
        """Query parameters, then form body parameters; the first value of a name wins."""
        def parse(text: str) -> list[tuple[str, str]]:
            return urllib.parse.parse_qsl(text, keep_blank_values=True,
                                          encoding="utf-8", errors="replace")
        pairs = parse(urllib.parse.urlsplit(self.path).query)
        ctype = (self.headers.get("Content-Type") or "").split(";")[0].strip().lower()
        if self.command == "POST" and ctype == "application/x-www-form-urlencoded":
            pairs += parse(body.decode("utf-8", "replace"))
        params: dict[str, str] = {}
        for name, value in pairs:
            params.setdefault(name, value)
        return params

    def _v1_send(self, params: dict[str, str], wrapper: str, result: str, message: str,
                 extra: dict[str, Any] | None = None,
                 errors: list[str | tuple[str, str]] | None = None,
                 shape: str | None = None) -> None:
        """Send a v1 document; errors are codes (standard message) or (code, message)."""
        state = self.server.state
        payload: dict[str, Any] = {"operationResult": result, "responseMessage": message,
                                   "responseDateTime": state.now_iso()}
        if extra:
            payload.update(extra)
        if errors:
            items = [{"errorCode": e[0], "errorMessage": e[1]} if isinstance(e, tuple)
                     else {"errorCode": e, "errorMessage": V1_ERRORS[e]} for e in errors]
            shape = shape or state.error_shape
            payload["errors"] = {"error": items[0] if shape == "object" and len(items) == 1
                                 else items}
        doc = {wrapper: payload}
        if (params.get("responseType") or "").lower() == "json":
            self._json(200, doc)
        else:  # NeonCRM's default representation is XML
            xml = '<?xml version="1.0" encoding="UTF-8"?>' + _xml(wrapper, payload)
            self._send(200, xml.encode("utf-8"), "application/xml")

    def _v1(self, op: str, body: bytes) -> None:
        if self.command not in ("GET", "POST"):
            self._json(405, {"error": "Method not allowed."})
            return
        params = self._v1_params(body)
        if op == "common/login":
            self._v1_login(params)
        elif op == "common/logout":
            self._v1_logout(params)
        elif op == "account/listAccounts":
            self._v1_list_accounts(params)
        else:
            self._json(404, {"error": "Not found."})

    def _v1_login(self, params: dict[str, str]) -> None:
        state = self.server.state
        org = params.get("login.orgid", "")
        key = params.get("login.apiKey", "")
        self._log_org = org
        state.begin("login", org)
        issued = False
        try:
            mode, mode_delay, delay = state.take_mode("login")
            self._wait(delay)
            if self._common_fault("login", mode, mode_delay):
                return
            w, failed = "loginResponse", "Login failed."
            if mode in ("fail", "fail_array"):
                self._v1_send(params, w, "FAIL", failed, errors=["5"], shape="array")
            elif mode == "fail_object":
                self._v1_send(params, w, "FAIL", failed, errors=["5"], shape="object")
            elif mode in ("error1", "error2"):
                self._v1_send(params, w, "FAIL", failed, errors=[mode[-1]])
            elif not org or not key:
                self._v1_send(params, w, "FAIL", failed,
                              errors=[("1", "Login parameters are required.")])
            elif state.check_credentials(org, key) != "ok":
                self._v1_send(params, w, "FAIL", failed, errors=["5"])
            elif mode == "success_no_id":
                self._v1_send(params, w, "SUCCESS", "User logged in.")
            else:
                sid = state.create_session(org, key)
                issued = True
                self._v1_send(params, w, "SUCCESS", "User logged in.",
                              extra={"userSessionId": sid})
        finally:
            state.end("login", org, True, issued)

    def _v1_logout(self, params: dict[str, str]) -> None:
        state = self.server.state
        sid = params.get("userSessionId", "")
        org = state.session_org(sid) or "?"
        self._log_org = org
        state.begin("logout", org)
        ok = False
        try:
            mode, mode_delay, delay = state.take_mode("logout")
            self._wait(delay)
            if self._common_fault("logout", mode, mode_delay):
                return
            w, failed = "logoutResponse", "Logout failed."
            if mode in ("fail", "error1"):
                self._v1_send(params, w, "FAIL", failed, errors=["1"])
            elif mode == "fail_object":
                self._v1_send(params, w, "FAIL", failed, errors=["1"], shape="object")
            elif mode == "error2":
                self._v1_send(params, w, "FAIL", failed, errors=["2"])
            elif not sid:
                self._v1_send(params, w, "FAIL", failed, errors=["3"])
            elif state.end_session(sid) is None:
                self._v1_send(params, w, "FAIL", failed, errors=["4"])
            else:
                ok = True
                self._v1_send(params, w, "SUCCESS", "User logged out.")
        finally:
            state.end("logout", org, True, ok)

    def _v1_list_accounts(self, params: dict[str, str]) -> None:
        state = self.server.state
        sid = params.get("userSessionId", "")
        org = state.session_org(sid) or "?"
        self._log_org = org
        state.begin("data", org)
        ok = False
        try:
            mode, mode_delay, delay = state.take_mode("data")
            self._wait(delay)
            if self._common_fault("data", mode, mode_delay):
                return
            w, failed = "listAccountsResponse", "Failed"
            if mode in ("fail", "error1"):
                self._v1_send(params, w, "FAIL", failed, errors=["1"])
            elif mode == "error2":
                self._v1_send(params, w, "FAIL", failed, errors=["2"])
            elif not sid:
                self._v1_send(params, w, "FAIL", failed, errors=["3"])
            elif mode == "error4":
                state.drop_session(sid)
                self._v1_send(params, w, "FAIL", failed, errors=["4"])
            else:
                live_org = state.use_session(sid)
                if live_org is None:
                    self._v1_send(params, w, "FAIL", failed, errors=["4"])
                else:
                    ok = True
                    self._v1_send(params, w, "SUCCESS", "Success", extra={
                        "page": {"currentPage": 1, "totalPage": 1, "pageSize": 20,
                                 "totalResults": 1},
                        "searchResults": {"nameValuePairs": [{"nameValuePair": [
                            {"name": "Account ID", "value": "1"},
                            {"name": "Organization", "value": live_org}]}]}})
        finally:
            state.end("data", org, True, ok)

    # ---- API v2
    def _basic_credentials(self) -> tuple[str | None, str | None, str | None]:
        """(org, key, error code): org/key as decoded (None when undecodable)."""
        values = self.headers.get_all("Authorization") or []
        if not values or not values[0].strip():
            return None, None, "10"
        if len(values) > 1:
            return None, None, "13"
        scheme, _, token = values[0].strip().partition(" ")
        if scheme.lower() != "basic":
            return None, None, "13"
        try:
            raw = base64.b64decode(token.strip(), validate=True)
            text = raw.decode("utf-8")
        except (binascii.Error, ValueError):
            return None, None, "13"
        org, sep, key = text.partition(":")
        if not sep:
            return org, None, "10"
        if not org:
            return org, key, "12"
        if not key:
            return org, key, "10"
        return org, key, None

    def _v2_error(self, status: int, code: str, message: str | None = None) -> None:
        self._json(status, [{"code": code, "message": message or V2_ERRORS[code]}])

    def _v2(self) -> None:
        state = self.server.state
        org, key, error = self._basic_credentials()
        stat_org = org or ""
        self._log_org = org
        admitted = state.begin("v2", stat_org)
        ok = False
        try:
            if not admitted:
                self._v2_error(429, "429", "Too many simultaneous requests.")
                return
            mode, mode_delay, delay = state.take_mode("v2")
            self._wait(delay)
            if self._common_fault("v2", mode, mode_delay):
                return
            if mode == "http401":
                self._v2_error(401, "13")
                return
            if mode == "http401_nobody":
                self._send(401, b"", None)
                return
            if mode == "http403":
                self._v2_error(403, "403", "The user does not have permission.")
                return
            if error is not None:
                self._v2_error(401, error)
                return
            verdict = state.check_credentials(org, key)
            if verdict != "ok":
                self._v2_error(401, "14" if verdict == "unknown_org" else "13")
                return
            versions = [v.strip() for v in self.headers.get_all("NEON-API-VERSION") or []]
            state.count_version(versions[0] if len(versions) == 1 else
                                ("" if not versions else "<several>"))
            if not versions or not versions[0]:
                self._v2_error(400, "400", "NEON-API-VERSION header required.")
                return
            if len(versions) > 1 or not state.version_accepted(versions[0]):
                self._v2_error(400, "400", "Unsupported API version.")
                return
            ok = True
            self._json(200, {"accountId": "1", "orgId": org, "apiVersion": versions[0]})
        finally:
            state.end("v2", stat_org, admitted, ok)

    # ---- control API
    def _control(self, op: str, body: bytes) -> None:
        state = self.server.state
        op = op.rstrip("/")
        if self.command in ("GET", "HEAD"):
            if op == "stats":
                self._json(200, state.stats())
            elif op == "mode":
                self._json(200, state.mode_snapshot())
            elif op == "accounts":
                self._json(200, state.accounts_snapshot())
            else:
                self._json(404, {"error": "Not found."})
            return
        if self.command != "POST":
            self._json(405, {"error": "Method not allowed."})
            return
        try:
            data = json.loads(body.decode("utf-8")) if body.strip() else {}
        except (UnicodeDecodeError, ValueError):
            self._json(400, {"error": "Body must be a JSON object."})
            return
        if not isinstance(data, dict):
            self._json(400, {"error": "Body must be a JSON object."})
            return
        try:
            if op == "reset":
                state.reset()
                self._json(200, {"ok": True})
            elif op == "accounts":
                org, key = data.get("orgId"), data.get("apiKey")
                replace = data.get("replace", True)
                if not isinstance(replace, bool):
                    raise ValueError("replace must be a boolean")
                state.add_account(org, key, replace=replace)
                self._json(200, {"orgId": org, "keyFingerprint": key_fingerprint(key)})
            elif op == "accounts/remove":
                org, key = data.get("orgId"), data.get("apiKey")
                if not isinstance(org, str) or (key is not None and not isinstance(key, str)):
                    raise ValueError("orgId (and optional apiKey) must be strings")
                self._json(200, {"removed": state.remove_account(org, key)})
            elif op == "mode":
                self._json(200, state.set_modes(data))
            elif op == "expire":
                org = data.get("orgId")
                if org is not None and not isinstance(org, str):
                    raise ValueError("orgId must be a string")
                self._json(200, {"expired": state.expire(org)})
            elif op == "idle-timeout":
                state.set_idle_timeout(data.get("seconds"))
                self._json(200, {"idleTimeout": state.idle_timeout})
            elif op == "advance":
                self._json(200, {"clockOffset": state.advance(data.get("seconds"))})
            elif op == "release":
                self._json(200, {"released": state.release_hangs()})
            else:
                self._json(404, {"error": "Not found."})
        except ValueError as exc:
            self._json(400, {"error": str(exc)})


class FakeNeonServer(http.server.ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128

    def __init__(self, address: tuple[str, int], state: FakeNeonState,
                 verbose: bool = False) -> None:
        host = address[0]
        if ":" in host:
            self.address_family = socket.AF_INET6
        self.state = state
        self.verbose = verbose
        self.stopping = threading.Event()
        self.tls_server: FakeNeonTLSServer | None = None
        super().__init__(address, FakeNeonHandler)
        self.host = host

    def finish_request(self, request: Any, client_address: Any) -> None:
        # Count TLS client hellos sent to this plain http port (a client told https, talking
        # to a server that speaks http) and answer them at once as a plain http server would,
        # with a 400 (waiting for a request line could take as long as the client waits).
        # (The peek blocks, as the handler's own first read would.)
        try:
            first = request.recv(1, socket.MSG_PEEK)
        except OSError:
            return
        if first == b"\x16":  # TLS record type 22: handshake
            self.state.count_tls("onPlainPort")
            try:
                request.sendall(b"HTTP/1.1 400 Bad Request\r\nContent-Type: application/json\r\n"
                                b"Content-Length: 25\r\nConnection: close\r\n\r\n{\"error\": \"Bad Request\"}\n")
            except OSError:
                pass
            return
        super().finish_request(request, client_address)

    def handle_error(self, request: Any, client_address: Any) -> None:
        exc = sys.exc_info()[1]
        if isinstance(exc, (ConnectionError, socket.timeout)):
            return
        sys.stderr.write(f"fake-neoncrm: internal error: {type(exc).__name__}\n")
        if self.verbose and exc is not None:
            sys.stderr.write("".join(traceback.format_tb(exc.__traceback__)))

    @property
    def port(self) -> int:
        return self.server_address[1]

    scheme = "http"

    def info(self) -> dict[str, Any]:
        host = f"[{self.host}]" if ":" in self.host else self.host
        base = f"{self.scheme}://{host}:{self.port}"
        out: dict[str, Any] = {"port": self.port, "base": base, "v1": base + V1_PATH, "v2": base + V2_PATH}
        if self.tls_server is not None:
            out["tls"] = self.tls_server.info()
        return out

    def stop(self) -> None:
        """Stop serving, wake hung requests and close the listening socket(s)."""
        self.stopping.set()
        self.state.release_hangs()
        if self.tls_server is not None:
            self.tls_server.stop()
        self.shutdown()
        self.server_close()


class FakeNeonTLSServer(FakeNeonServer):
    """The same fake over https: each accepted connection's handshake runs on its own thread
    (never in the accept loop) and is counted, whether it completes or fails."""

    scheme = "https"

    def __init__(self, address: tuple[str, int], state: FakeNeonState, context: ssl.SSLContext,
                 verbose: bool = False) -> None:
        self.context = context
        super().__init__(address, state, verbose=verbose)

    def finish_request(self, request: Any, client_address: Any) -> None:
        self.state.count_tls("connections")
        try:
            request.settimeout(10.0)
            tls = self.context.wrap_socket(request, server_side=True, do_handshake_on_connect=False)
        except (OSError, ssl.SSLError):
            self.state.count_tls("handshakeFailures")
            return
        try:
            tls.do_handshake()
            tls.settimeout(None)
        except (OSError, ssl.SSLError) as exc:
            self.state.count_tls("handshakeFailures")
            if self.verbose:
                sys.stderr.write(f"fake-neoncrm: TLS handshake failed: {type(exc).__name__}: "
                                 f"{getattr(exc, 'reason', None) or exc.__class__.__name__}\n")
            # Keep the connection open until the client has read the alert and closes (at most
            # 1 s), so that it sees the alert rather than a reset.
            try:
                tls.settimeout(1.0)
                while socket.socket.recv(tls, 65536):
                    pass
            except OSError:
                pass
            try:
                tls.close()
            except OSError:
                pass
            return
        self.state.count_tls("handshakes")
        try:
            self.RequestHandlerClass(tls, client_address, self)
        finally:
            try:
                tls.close()
            except OSError:
                pass


def tls_context(cert_file: str, key_file: str, require_client_cert: bool = False) -> ssl.SSLContext:
    """A server context serving `cert_file` (a PEM chain, leaf first) with `key_file`; with
    `require_client_cert`, one that demands a client certificate issued by `cert_file` itself
    (which no client has: every handshake fails)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert_file, key_file)
    if require_client_cert:
        context.verify_mode = ssl.CERT_REQUIRED
        context.load_verify_locations(cert_file)
    return context


def _check_loopback(host: str) -> None:
    if host == "localhost":
        return
    try:
        ok = ipaddress.ip_address(host).is_loopback
    except ValueError:
        ok = False
    if not ok:
        raise ValueError(f"host must be a loopback address, not {host!r}")


def _accounts(accounts: Any) -> list[tuple[str, str]]:
    if accounts is None:
        return []
    if isinstance(accounts, dict):
        return list(accounts.items())
    return [parse_account(a) if isinstance(a, str) else tuple(a) for a in accounts]


def start_server(host: str = "127.0.0.1", port: int = 0, accounts: Any = None,
                 idle_timeout: float = 1800.0, login_delay: float = 0.0,
                 session_id_style: str = "t13", api_versions: Any = "2.1-2.11",
                 verbose: bool = False, tz: datetime.tzinfo = DEFAULT_TZ,
                 tls_cert: str | None = None, tls_key: str | None = None, tls_port: int = 0,
                 tls_require_client_cert: bool = False,
                 ) -> tuple[FakeNeonServer, threading.Thread]:
    """Start the fake in a daemon thread.

    accounts: ("org", "key") pairs, "org:key" strings, or a {org: key} dict.
    tls_cert, tls_key: PEM files; when given, https is served too, on tls_port (0: ephemeral);
    tls_require_client_cert makes every TLS handshake fail (a client certificate is demanded).
    Returns (server, thread); server.state is the FakeNeonState, server.info()
    the ready-line dict, server.stop() shuts it down.
    """
    _check_loopback(host)
    if (tls_cert is None) != (tls_key is None):
        raise ValueError("--tls-cert and --tls-key go together")
    context = (tls_context(tls_cert, tls_key, tls_require_client_cert)
               if tls_cert is not None and tls_key is not None else None)
    state = FakeNeonState(_accounts(accounts), idle_timeout=idle_timeout,
                          login_delay=login_delay, session_id_style=session_id_style,
                          api_versions=api_versions, tz=tz)
    server = FakeNeonServer((host, port), state, verbose=verbose)
    if context is not None:
        try:
            server.tls_server = FakeNeonTLSServer((host, tls_port), state, context, verbose=verbose)
        except OSError:
            server.server_close()
            raise
        threading.Thread(target=server.tls_server.serve_forever, kwargs={"poll_interval": 0.1},
                         name="fake-neoncrm-tls", daemon=True).start()
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1},
                              name="fake-neoncrm", daemon=True)
    thread.start()
    return server, thread


class _Stop(Exception):
    pass


def main(argv: list[str] | None = None) -> int:
    modes = "\n".join(f"  {kind:7} {', '.join(sorted(MODES[kind]))}" for kind in KINDS)
    epilog = f"""fault modes, per kind of request (POST /_control/mode):
{modes}
  e.g. {{"login": "hang"}}, {{"login": {{"mode": "http500", "count": 2}}}}, {{"loginDelay": 0.5}};
  fields: KIND (a mode, or {{"mode", "count", "delay"}}), count, delay, loginDelay, logoutDelay,
  dataDelay, v2Delay, errorShape, apiVersions, v2MaxConcurrent, sessionIdStyle

control API (under /_control/; POST bodies are JSON objects):
  GET  stats            counters by org ID (logins, logouts, activeSessions, loginsByKey, ...)
                        and TLS counts (tlsConnections, tlsHandshakes, tlsHandshakeFailures,
                        tlsOnPlainPort)
  GET  mode             the current fault modes
  GET  accounts         org IDs and key fingerprints (never keys)
  POST reset            clear counters, sessions and modes; keep accounts
  POST accounts         {{"orgId", "apiKey", "replace"?: bool}}: add (or replace) an account
  POST accounts/remove  {{"orgId", "apiKey"?}}: remove an account and revoke its sessions
  POST mode             set fault modes (above)
  POST expire           {{"orgId"?}}: end sessions as NeonCRM's idle timeout would
  POST idle-timeout     {{"seconds"}}: NeonCRM's idle window
  POST advance          {{"seconds"}}: move the fake's clock forward
  POST release          wake every request held by a hang mode
"""
    parser = argparse.ArgumentParser(description="Fake NeonCRM authentication API for tests.", epilog=epilog,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--host", default="127.0.0.1", help="loopback address to bind")
    parser.add_argument("--port", type=int, default=0, help="0 = ephemeral")
    parser.add_argument("--account", action="append", default=[], metavar="ORG:KEY",
                        help="org ID and API key, split at the first ':' (repeatable)")
    parser.add_argument("--idle-timeout", type=float, default=1800.0, metavar="SECONDS")
    parser.add_argument("--login-delay", type=float, default=0.0, metavar="SECONDS")
    parser.add_argument("--session-id-style", choices=("t13", "hex32"), default="t13")
    parser.add_argument("--api-versions", default="2.1-2.11", metavar="2.A-2.B")
    parser.add_argument("--verbose", action="store_true",
                        help="one line per request on stderr (no secrets)")
    parser.add_argument("--tls-cert", metavar="FILE",
                        help="also serve https with this PEM certificate chain (leaf first); needs --tls-key")
    parser.add_argument("--tls-key", metavar="FILE", help="the private key of --tls-cert (PEM)")
    parser.add_argument("--tls-port", type=int, default=0, help="the https port (default 0 = ephemeral)")
    parser.add_argument("--tls-require-client-cert", action="store_true",
                        help="demand a client certificate nobody has: every TLS handshake fails")
    args = parser.parse_args(argv)
    try:
        accounts = [parse_account(a) for a in args.account]
        server, _ = start_server(args.host, args.port, accounts, args.idle_timeout,
                                 args.login_delay, args.session_id_style, args.api_versions,
                                 args.verbose, tls_cert=args.tls_cert, tls_key=args.tls_key,
                                 tls_port=args.tls_port, tls_require_client_cert=args.tls_require_client_cert)
    except (ValueError, OSError, ssl.SSLError) as exc:
        sys.stderr.write(f"fake-neoncrm: {exc}\n")
        return 2

    def on_signal(signum: int, frame: Any) -> None:
        raise _Stop()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    # A parent may spawn us with these blocked (libdispatch worker threads block signals,
    # and the mask is inherited); unblock them so SIGTERM really stops the fake.
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGTERM, signal.SIGINT})
    try:
        try:
            sys.stdout.write(json.dumps(server.info()) + "\n")
            sys.stdout.flush()
        except (OSError, ValueError):
            pass
        while True:
            time.sleep(3600)
    except (_Stop, KeyboardInterrupt):
        pass
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
