"""Python client for neon-auth, the NeonCRM credential helper.

neon-auth is a long-running process that speaks newline-delimited JSON-RPC 2.0
on stdin/stdout. This module spawns it, sends requests, and matches responses
by id (they may arrive out of order). Standard library only; Python 3.11+.

Usage::

    import urllib.request
    from neon_auth import NeonAuth, NeonAuthError

    with NeonAuth() as client:                 # spawns neon-auth
        signed = client.sign(org_id="acme", api_key=key)
        signed["headers"]    # {"Authorization": "Basic ...", "NEON-API-VERSION": "2.N"}
        signed["baseUrl"]    # API v2 base URL

        auth = client.auth("acme", key)        # re-signs each time it is applied
        req = urllib.request.Request(auth.base_url + "/accounts/1")
        auth.apply(req)                        # or: requests.get(url, auth=auth)
        urllib.request.urlopen(req)

        session = client.open_session("acme", key)   # API v1 session
        sid = session["userSessionId"]
        ...
        client.close_session(sid)
    # leaving the block closes stdin; neon-auth logs pooled sessions out and exits

Errors answered by neon-auth raise NeonAuthError (see its code constants); a
dead or closed process raises NeonAuthConnectionError (also a ConnectionError);
a response that does not arrive in time raises NeonAuthTimeout (also a
TimeoutError). Error messages never contain request parameters, so they are
safe to log. This module never logs or prints credentials.
"""

from __future__ import annotations

import itertools
import json
import logging
import os
import shutil
import subprocess
import threading
from concurrent.futures import Future
from concurrent.futures import TimeoutError as _FutureTimeout
from pathlib import Path
from typing import Any, Mapping, Sequence

__all__ = [
    "NeonAuth",
    "NeonAuthError",
    "NeonAuthConnectionError",
    "NeonAuthTimeout",
    "NeonAuthSigner",
    "find_binary",
]

_log = logging.getLogger("neon_auth")


class NeonAuthError(Exception):
    """An error answered by neon-auth (a JSON-RPC error object).

    Attributes: ``code`` (int, or None for client-side errors), ``message``
    (str) and ``data`` (whatever the server sent, or None). ``str()`` shows
    the message and code only, never request parameters.
    """

    # JSON-RPC 2.0 standard codes.
    PARSE_ERROR = -32700
    INVALID_REQUEST = -32600
    METHOD_NOT_FOUND = -32601
    INVALID_PARAMS = -32602
    INTERNAL_ERROR = -32603
    # neon-auth codes.
    CREDENTIALS_REJECTED = -32001   # NeonCRM rejected the credentials
    NEONCRM_UNAVAILABLE = -32002    # NeonCRM unavailable
    NEONCRM_TIMEOUT = -32003        # NeonCRM timed out
    UNEXPECTED_RESPONSE = -32004    # unexpected response from NeonCRM
    SHUTTING_DOWN = -32005          # neon-auth is shutting down: retry with a new process
    AGENT_UNAVAILABLE = -32006      # neon-auth-agent missing, unreachable, or ended mid-call
    TLS_FAILURE = -32007            # TLS to NeonCRM failed (data.reason: untrusted-issuer, expired...)
    UNKNOWN_SESSION = -32010        # unknown userSessionId
    SESSION_HAS_NO_HOLDER = -32011  # session is not held by anyone
    NO_CREDENTIALS = -32020         # no credentials found (data.searched says where)
    CREDENTIALS_FILE_REFUSED = -32021  # credentials file refused (data.path, data.reason)
    UNKNOWN_PROFILE = -32022        # no such profile (data.profiles lists the file's)
    CREDENTIALS_CHANGED = -32023    # the API key changed during the login: retry

    def __init__(self, code: int | None, message: str, data: Any = None):
        super().__init__(code, message)
        self.code = code
        self.message = message
        self.data = data

    def __str__(self) -> str:
        if self.code is None:
            return self.message
        return f"{self.message} (code {self.code})"

    def __repr__(self) -> str:
        return f"{type(self).__name__}(code={self.code!r}, message={self.message!r})"


class NeonAuthConnectionError(NeonAuthError, ConnectionError):
    """neon-auth is not running, exited, or closed its stdout."""

    def __init__(self, message: str):
        NeonAuthError.__init__(self, None, message)


class NeonAuthTimeout(NeonAuthError, TimeoutError):
    """No response arrived within the client's timeout."""

    def __init__(self, message: str):
        NeonAuthError.__init__(self, None, message)


def find_binary(binary: str | os.PathLike | None = None) -> str:
    """Locate the neon-auth executable.

    Order: ``binary`` if given, then ``$NEON_AUTH_BIN``, then ``neon-auth`` on
    PATH, then ``<repo>/.build/release/neon-auth`` where ``<repo>`` is the
    parent of this file's directory. Raises FileNotFoundError if none exists.
    """
    if binary is not None:
        return os.fspath(binary)
    from_env = os.environ.get("NEON_AUTH_BIN")
    if from_env:
        return from_env
    on_path = shutil.which("neon-auth")
    if on_path:
        return on_path
    built = Path(__file__).resolve().parent.parent / ".build" / "release" / "neon-auth"
    if built.exists():
        return str(built)
    raise FileNotFoundError(
        "neon-auth not found: pass binary=, set NEON_AUTH_BIN, put neon-auth on "
        f"PATH, or build it with `swift build -c release` (looked for {built})"
    )


def _drop_none(params: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in params.items() if v is not None}


class NeonAuth:
    """A running neon-auth process and a JSON-RPC client for it.

    Args:
        binary: path of the executable (see :func:`find_binary` for the default).
        args: extra command-line arguments, e.g. ``["--v2-base-url", url]``.
        env: environment variables to set for the process, merged over
            ``os.environ``.
        stderr: where the process's logs go; None (default) inherits this
            process's stderr; anything ``subprocess.Popen`` accepts works.
        timeout: seconds to wait for each response (None waits forever).

    Thread-safe: several threads may call concurrently; responses are matched
    by id. Use as a context manager, or call :meth:`close`.
    """

    def __init__(
        self,
        binary: str | os.PathLike | None = None,
        args: Sequence[str] = (),
        env: Mapping[str, str] | None = None,
        stderr: Any = None,
        timeout: float | None = 30.0,
    ):
        self.binary = find_binary(binary)
        self.timeout = timeout
        full_env = None
        if env is not None:
            full_env = dict(os.environ)
            full_env.update(env)
        self._ids = itertools.count(1)
        self._lock = threading.Lock()          # guards _pending and _eof
        self._write_lock = threading.Lock()    # serialises writes to stdin
        self._pending: dict[int, Future] = {}
        self._eof = False
        self._eof_reason = ""
        self._proc = subprocess.Popen(
            [self.binary, *args],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=stderr,
            env=full_env,
        )
        self._reader = threading.Thread(
            target=self._read_loop, name="neon-auth-reader", daemon=True
        )
        self._reader.start()

    # -- lifecycle -----------------------------------------------------------

    @property
    def pid(self) -> int:
        return self._proc.pid

    @property
    def returncode(self) -> int | None:
        """The exit code once the process has exited, else None."""
        return self._proc.poll()

    def __enter__(self) -> "NeonAuth":
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()

    def close(self, timeout: float | None = 10) -> int:
        """Close stdin, wait for neon-auth to exit, and return its exit code.

        neon-auth answers what is in flight, logs out pooled sessions and
        exits. If it has not exited within ``timeout`` seconds it is killed
        (the return code is then negative). Safe to call more than once.
        """
        with self._write_lock:
            try:
                if self._proc.stdin and not self._proc.stdin.closed:
                    self._proc.stdin.close()
            except OSError:
                pass
        try:
            code = self._proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            _log.warning("neon-auth (pid %d) did not exit in %ss; killing it",
                         self._proc.pid, timeout)
            self._proc.kill()
            code = self._proc.wait()
        self._reader.join(timeout=5)
        self._fail_pending("neon-auth exited")
        try:
            self._proc.stdout.close()
        except OSError:
            pass
        return code

    def kill(self) -> None:
        """Kill the process at once (no logout of pooled sessions)."""
        self._proc.kill()

    # -- transport -----------------------------------------------------------

    def _read_loop(self) -> None:
        stdout = self._proc.stdout
        try:
            for line in stdout:
                if not line.strip():
                    continue
                try:
                    msg = json.loads(line)
                except ValueError:
                    _log.warning("neon-auth wrote a line that is not JSON (%d bytes)",
                                 len(line))
                    continue
                self._dispatch(msg)
        except (OSError, ValueError):
            pass  # stdout closed under us
        finally:
            reason = "neon-auth closed its output"
            try:
                code = self._proc.wait(timeout=0.2)
                reason = f"neon-auth exited (exit code {code})"
            except subprocess.TimeoutExpired:
                pass
            self._fail_pending(reason)

    def _dispatch(self, msg: Any) -> None:
        if not isinstance(msg, dict):
            _log.warning("neon-auth wrote a JSON value that is not an object")
            return
        msg_id = msg.get("id")
        if not isinstance(msg_id, int) or isinstance(msg_id, bool):
            # e.g. a parse error answered with "id": null
            err = msg.get("error")
            if isinstance(err, dict):
                _log.warning("neon-auth reported an error without id: %s (code %s)",
                             err.get("message"), err.get("code"))
            else:
                _log.warning("neon-auth wrote a response without a usable id")
            return
        with self._lock:
            fut = self._pending.pop(msg_id, None)
        if fut is None:
            # Usually a late answer to a call that already timed out.
            _log.debug("neon-auth answered id %d, which no call awaits", msg_id)
            return
        if "error" in msg:
            err = msg["error"] if isinstance(msg["error"], dict) else {}
            fut.set_exception(NeonAuthError(
                err.get("code"), str(err.get("message", "unknown error")), err.get("data")
            ))
        elif "result" in msg:
            fut.set_result(msg["result"])
        else:
            fut.set_exception(NeonAuthError(
                NeonAuthError.INVALID_REQUEST, "response has neither result nor error"
            ))

    def _fail_pending(self, reason: str) -> None:
        with self._lock:
            if not self._eof:
                self._eof, self._eof_reason = True, reason
            pending, self._pending = self._pending, {}
        for fut in pending.values():
            if not fut.done():
                fut.set_exception(NeonAuthConnectionError(reason))

    def _write(self, message: dict[str, Any]) -> None:
        data = json.dumps(message, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
        with self._write_lock:
            stdin = self._proc.stdin
            if stdin is None or stdin.closed:
                raise NeonAuthConnectionError("neon-auth client is closed")
            try:
                stdin.write(data + b"\n")
                stdin.flush()
            except (BrokenPipeError, ValueError, OSError):
                raise NeonAuthConnectionError("neon-auth is not reading its input") from None

    # -- JSON-RPC ------------------------------------------------------------

    def call(self, method: str, /, **params: Any) -> Any:
        """Call ``method`` with named ``params`` and return its result.

        Raises NeonAuthError for an error response, NeonAuthConnectionError if
        the process is gone, NeonAuthTimeout if no answer comes in time.
        """
        msg_id = next(self._ids)
        message: dict[str, Any] = {"jsonrpc": "2.0", "id": msg_id, "method": method}
        if params:
            message["params"] = params
        fut: Future = Future()
        with self._lock:
            if self._eof:
                raise NeonAuthConnectionError(self._eof_reason)
            self._pending[msg_id] = fut
        try:
            self._write(message)
        except NeonAuthConnectionError:
            with self._lock:
                self._pending.pop(msg_id, None)
            raise
        try:
            return fut.result(timeout=self.timeout)
        except _FutureTimeout:
            with self._lock:
                self._pending.pop(msg_id, None)
            raise NeonAuthTimeout(
                f"no response to {method!r} within {self.timeout}s"
            ) from None

    def notify(self, method: str, /, **params: Any) -> None:
        """Send a notification (no id, no response)."""
        message: dict[str, Any] = {"jsonrpc": "2.0", "method": method}
        if params:
            message["params"] = params
        self._write(message)

    # -- methods -------------------------------------------------------------

    def sign(self, org_id: str | None = None, api_key: str | None = None,
             api_version: str | None = None, profile: str | None = None) -> dict[str, Any]:
        """API v2 headers: ``{"authorization", "headers", "baseUrl"}``.

        Give ``org_id`` and ``api_key``, or a ``profile`` from the credentials
        file, or neither (profile ``default``).
        """
        return self.call("sign", **_drop_none(
            {"orgId": org_id, "apiKey": api_key, "profile": profile, "apiVersion": api_version}))

    def open_session(self, org_id: str | None = None, api_key: str | None = None,
                     replace: str | None = None, profile: str | None = None) -> dict[str, Any]:
        """API v1 session: ``{"userSessionId", "reused"}``.

        Credentials as for ``sign``. ``replace``: a session id NeonCRM refused
        (error 4); neon-auth logs in again instead of handing it out.
        """
        return self.call("openSession", **_drop_none(
            {"orgId": org_id, "apiKey": api_key, "profile": profile, "replace": replace}))

    def close_session(self, user_session_id: str, logout: bool = False) -> dict[str, Any]:
        """Release a session: ``{"closed": True, "loggedOut": bool}``."""
        return self.call("closeSession", userSessionId=user_session_id, logout=logout)

    def status(self) -> dict[str, Any]:
        """The pool and counters, without secrets."""
        return self.call("status")

    def auth(self, org_id: str | None = None, api_key: str | None = None,
             api_version: str | None = None, profile: str | None = None) -> "NeonAuthSigner":
        """An auth object for ``requests`` (``auth=``) or urllib (``.apply(req)``)."""
        return NeonAuthSigner(self, org_id, api_key, api_version, profile)


class NeonAuthSigner:
    """Signs HTTP requests for API v2 through a running neon-auth.

    Calls ``sign`` every time it is applied, so the API version and base URL
    neon-auth is configured with stay authoritative.

    - requests: ``requests.get(url, auth=signer)`` (``signer(r)`` sets headers).
    - urllib: ``signer.apply(urllib.request.Request(url))``.
    - ``signer.base_url``: the API v2 base URL (signs once, lazily).
    """

    def __init__(self, client: NeonAuth, org_id: str | None = None, api_key: str | None = None,
                 api_version: str | None = None, profile: str | None = None):
        self._client = client
        self._org_id = org_id
        self._api_key = api_key
        self._api_version = api_version
        self._profile = profile
        self._base_url: str | None = None

    def _sign(self) -> dict[str, Any]:
        result = self._client.sign(self._org_id, self._api_key, self._api_version, self._profile)
        self._base_url = result.get("baseUrl")
        return result

    def headers(self) -> dict[str, str]:
        """Fresh signed headers (Authorization and NEON-API-VERSION)."""
        return dict(self._sign()["headers"])

    @property
    def base_url(self) -> str:
        if self._base_url is None:
            self._sign()
        return self._base_url  # type: ignore[return-value]

    def __call__(self, r: Any) -> Any:
        """requests auth hook: set the signed headers on a PreparedRequest."""
        r.headers.update(self.headers())
        return r

    def apply(self, req: Any) -> Any:
        """Add the signed headers to a urllib.request.Request and return it."""
        for name, value in self.headers().items():
            req.add_header(name, value)
        return req

    def __repr__(self) -> str:
        return f"NeonAuthSigner(org_id={self._org_id!r}, profile={self._profile!r}, api_key=<redacted>)"
