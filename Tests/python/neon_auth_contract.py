"""neon-auth's interface description (schemas/openrpc.json) as validators.

Used by the tests in this folder: it loads the OpenRPC document, resolves its
local references, and checks requests' params, results, error objects and
whole request/response exchanges against it.

Conventions of the document that this module relies on (described in the
document's top-level ``x-neon-auth.conventions``):

- each error object's ``data`` is a JSON Schema (draft-07) of the ``data``
  member the server sends with that code, with ``x-presence`` saying whether
  it is sent ``always``, ``sometimes`` or ``never``;
- a method's ``x-params-constraints`` is a JSON Schema applied to the whole
  params object in addition to the content descriptors;
- ``x-params-ignored: true`` means any params are accepted and ignored;
- the transport errors are the ones every method lists.

Only the standard library, ``jsonschema`` (>= 4.18) and ``referencing`` (a
dependency of jsonschema) are needed.
"""

from __future__ import annotations

import json
import re
from functools import cached_property
from pathlib import Path
from typing import Any, Iterable, Iterator

import jsonschema
from referencing import Registry
from referencing.jsonschema import DRAFT7

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
DOCUMENT_PATH = REPO / "schemas" / "openrpc.json"
META_SCHEMA_PATH = HERE / "openrpc-1.3-meta-schema.json"
DOC_URI = "urn:neon-auth:openrpc"

JSONRPC_ID = {"type": ["string", "number", "null"]}


def _escape(token: str) -> str:
    return token.replace("~", "~0").replace("/", "~1")


def _unescape(token: str) -> str:
    return token.replace("~1", "/").replace("~0", "~")


class Contract:
    """The document plus validators derived from it."""

    def __init__(self, path: Path = DOCUMENT_PATH):
        self.path = path
        self.text = path.read_text(encoding="utf-8")
        self.doc = json.loads(self.text)
        self.registry = Registry().with_resource(DOC_URI, DRAFT7.create_resource(self.doc))

    # -- references ----------------------------------------------------------

    def pointer_get(self, pointer: str) -> Any:
        """The value at a JSON pointer ('' or '/a/b') of the document."""
        node: Any = self.doc
        if pointer in ("", "/"):
            return node
        for raw in pointer.lstrip("/").split("/"):
            token = _unescape(raw)
            node = node[int(token)] if isinstance(node, list) else node[token]
        return node

    def deref(self, node: Any, pointer: str) -> tuple[Any, str]:
        """Follows local ``$ref``s (OpenRPC Reference Objects): (value, its pointer)."""
        seen = set()
        while isinstance(node, dict) and set(node) == {"$ref"}:
            target = node["$ref"]
            if not target.startswith("#"):
                raise ValueError(f"non-local reference {target!r} at {pointer or '/'}")
            if target in seen:
                raise ValueError(f"reference loop at {target!r}")
            seen.add(target)
            pointer = target[1:]
            node = self.pointer_get(pointer)
        return node, pointer

    def references(self) -> Iterator[tuple[str, str]]:
        """Every ``$ref`` in the document: (where, target)."""
        def walk(node: Any, pointer: str) -> Iterator[tuple[str, str]]:
            if isinstance(node, dict):
                if isinstance(node.get("$ref"), str):
                    yield pointer, node["$ref"]
                for key, value in node.items():
                    yield from walk(value, f"{pointer}/{_escape(key)}")
            elif isinstance(node, list):
                for i, value in enumerate(node):
                    yield from walk(value, f"{pointer}/{i}")
        yield from walk(self.doc, "")

    def validator(self, pointer: str) -> jsonschema.Draft7Validator:
        """A validator for the schema at a pointer of the document (refs resolve in it)."""
        return self.schema_validator({"$ref": f"{DOC_URI}#{pointer}"})

    def schema_validator(self, schema: Any) -> jsonschema.Draft7Validator:
        return jsonschema.Draft7Validator(schema, registry=self.registry)

    # -- methods ----------------------------------------------------------------

    @cached_property
    def methods(self) -> dict[str, tuple[dict, str]]:
        """name -> (method object, its pointer)."""
        out = {}
        for i, entry in enumerate(self.doc["methods"]):
            method, pointer = self.deref(entry, f"/methods/{i}")
            out[method["name"]] = (method, pointer)
        return out

    def method(self, name: str) -> dict:
        return self.methods[name][0]

    def params(self, name: str) -> list[tuple[dict, str]]:
        """The method's content descriptors, dereferenced: [(descriptor, pointer)]."""
        method, pointer = self.methods[name]
        return [self.deref(p, f"{pointer}/params/{i}") for i, p in enumerate(method["params"])]

    def params_schema(self, name: str) -> dict:
        """A JSON Schema for the params object of a by-name call of the method."""
        method, pointer = self.methods[name]
        if method.get("x-params-ignored"):
            return {"type": ["object", "array"]}
        properties = {}
        required = []
        for descriptor, dpointer in self.params(name):
            properties[descriptor["name"]] = {"$ref": f"{DOC_URI}#{dpointer}/schema"}
            if descriptor.get("required"):
                required.append(descriptor["name"])
        schema: dict[str, Any] = {"type": "object", "properties": properties,
                                  "additionalProperties": False}
        if required:
            schema["required"] = required
        if "x-params-constraints" in method:
            schema["allOf"] = [{"$ref": f"{DOC_URI}#{pointer}/x-params-constraints"}]
        return schema

    def params_errors(self, name: str, params: Any) -> list[str]:
        """Problems of a params value (None: absent) for the method."""
        if params is None:
            params = {}
        return [_describe(e) for e in self.schema_validator(self.params_schema(name)).iter_errors(params)]

    def result_pointer(self, name: str) -> str:
        method, pointer = self.methods[name]
        _, rpointer = self.deref(method["result"], f"{pointer}/result")
        return f"{rpointer}/schema"

    def result_errors(self, name: str, result: Any) -> list[str]:
        problems = [_describe(e) for e in self.validator(self.result_pointer(name)).iter_errors(result)]
        if name == "rpc.discover" and not problems and result != self.doc:
            problems.append("rpc.discover result differs from schemas/openrpc.json")
        return problems

    # -- errors -------------------------------------------------------------

    @cached_property
    def error_components(self) -> dict[int, tuple[dict, str]]:
        """code -> (error object, pointer) for components/errors."""
        out = {}
        for key, error in self.doc.get("components", {}).get("errors", {}).items():
            out[error["code"]] = (error, f"/components/errors/{_escape(key)}")
        return out

    def method_errors(self, name: str) -> dict[int, str]:
        """code -> pointer of the error object, for the errors the method lists."""
        method, pointer = self.methods[name]
        out = {}
        for i, entry in enumerate(method.get("errors", [])):
            error, epointer = self.deref(entry, f"{pointer}/errors/{i}")
            out[error["code"]] = epointer
        return out

    @cached_property
    def transport_codes(self) -> set[int]:
        """The codes every method lists (the transport's errors)."""
        sets = [set(self.method_errors(name)) for name in self.methods]
        return set.intersection(*sets) if sets else set()

    def error_object_schema(self, error_pointer: str) -> dict:
        """A JSON Schema for an error object the server sends with this documented error."""
        error = self.pointer_get(error_pointer)
        data = error.get("data")
        required = ["code", "message"]
        if isinstance(data, dict) and data.get("x-presence") == "always":
            required.append("data")
        properties: dict[str, Any] = {
            "code": {"const": error["code"]},
            "message": {"type": "string", "minLength": 1},
        }
        properties["data"] = {"$ref": f"{DOC_URI}#{error_pointer}/data"} if data is not None else {}
        return {"type": "object", "required": required, "properties": properties,
                "additionalProperties": False}

    def error_errors(self, name: str | None, error: Any) -> list[str]:
        """Problems of an error object answered to a call of ``name`` (None: unknown call)."""
        if not isinstance(error, dict) or not isinstance(error.get("code"), int) or isinstance(error.get("code"), bool):
            return [f"error is not an object with an integer code: {error!r}"]
        code = error["code"]
        if name is not None and name in self.methods:
            allowed = self.method_errors(name)
            where = f"method {name!r}"
        else:
            allowed = {c: p for c, (e, p) in self.error_components.items() if c in self.transport_codes}
            where = "a message without a documented method" if name is None else f"undocumented method {name!r}"
            if name is not None and code != -32601 and code not in allowed:
                return [f"{where} answered {code}, expected -32601"]
        if code not in allowed:
            return [f"{where} answered error {code}, which it does not document (documents {sorted(allowed)})"]
        schema = self.error_object_schema(allowed[code])
        return [f"error {code}: {_describe(e)}" for e in self.schema_validator(schema).iter_errors(error)]

    # -- responses and exchanges ------------------------------------------------

    def response_errors(self, name: str | None, response: Any) -> list[str]:
        """Problems of one response object to a call of ``name`` (None: unknown)."""
        if not isinstance(response, dict):
            return [f"response is not an object: {response!r}"[:300]]
        problems = []
        if response.get("jsonrpc") != "2.0":
            problems.append("response jsonrpc is not \"2.0\"")
        if "id" not in response:
            problems.append("response has no id")
        elif not self.schema_validator(JSONRPC_ID).is_valid(response["id"]):
            problems.append("response id is not a string, number or null")
        has_result, has_error = "result" in response, "error" in response
        if has_result == has_error:
            problems.append("response must have exactly one of result and error")
        extra = set(response) - {"jsonrpc", "id", "result", "error"}
        if extra:
            problems.append(f"response has unexpected members {sorted(extra)}")
        if has_result and not has_error:
            if name is None or name not in self.methods:
                problems.append(f"a result was answered to {'an unknown call' if name is None else repr(name)}")
            else:
                problems += [f"{name} result: {p}" for p in self.result_errors(name, response["result"])]
        if has_error and not has_result:
            problems += self.error_errors(name, response["error"])
        return problems

    def exchange_errors(self, request_text: Any, response_text: Any) -> list[str]:
        """Problems of one exchange: the request as sent and the response as received.

        Both may be text (one framed message) or already-parsed JSON. A batch
        request is answered with an array matched by id; a response with id
        null (unreadable request) is checked against the transport errors.
        """
        request = _parse(request_text)
        try:
            response = _parse_strict(response_text)
        except ValueError as exc:
            return [f"response is not JSON: {exc}"]
        if isinstance(response, list):
            if not isinstance(request, list):
                return ["an array was answered to a request that is not a batch"]
            if not response:
                return ["an empty array was answered (nothing at all is expected instead)"]
            problems = []
            calls = [c for c in request if isinstance(c, dict)]
            # Index the members by id so that a large batch is checked in linear time.
            by_id: dict[Any, list[dict]] = {}
            for call in calls:
                if "id" in call:
                    by_id.setdefault(_id_key(call["id"]), []).append(call)
            for item in response:
                rid = item.get("id", _MISSING) if isinstance(item, dict) else _MISSING
                near = by_id.get(_id_key(rid), []) if rid is not _MISSING and rid is not None else calls
                problems += self._match_and_check(near, item)
            return problems
        if isinstance(request, list):
            # Only an empty batch gets a single response (-32600).
            if request:
                return ["a single object was answered to a non-empty batch"]
            return self.response_errors(None, response)
        return self._match_and_check([request] if isinstance(request, dict) else [], response)

    def _match_and_check(self, calls: list[dict], response: Any) -> list[str]:
        if not isinstance(response, dict):
            return [f"response is not an object: {response!r}"[:300]]
        rid = response.get("id", _MISSING)
        if rid is _MISSING:
            return self.response_errors(None, response)
        if rid is None:
            # Either the request was unreadable (transport error) or it really used id null,
            # which JSON-RPC allows: a result can only be the latter.
            explicit = [c for c in calls if "id" in c and c["id"] is None and isinstance(c.get("method"), str)]
            if "result" in response and explicit:
                return self.response_errors(explicit[0]["method"], response)
            return self.response_errors(None, response)
        candidates = [c for c in calls if "id" in c and _same_id(c["id"], rid)]
        if not candidates:
            return [f"response id {rid!r} matches no request"]
        outcomes = []
        for call in candidates:
            method = call.get("method")
            outcomes.append(self.response_errors(method if isinstance(method, str) else None, response))
            if not outcomes[-1]:
                return []
        return outcomes[0]

    def transcript_errors(self, lines: Iterable[str], source: str = "transcript") -> tuple[int, list[str]]:
        """Checks a JSON-lines transcript of {"request", "response"} objects: (count, problems)."""
        problems, count = [], 0
        for number, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                entry = json.loads(line)
            except ValueError as exc:
                problems.append(f"{source}:{number}: not JSON: {exc}")
                continue
            if not isinstance(entry, dict) or "request" not in entry or "response" not in entry:
                problems.append(f"{source}:{number}: not an object with request and response")
                continue
            count += 1
            if entry["response"] is None or entry["response"] == "":
                continue  # nothing was answered (notifications)
            for p in self.exchange_errors(entry["request"], entry["response"]):
                problems.append(f"{source}:{number}: {p} [request: {_short(entry['request'])}]")
        return count, problems


_MISSING = object()


def _id_key(value: Any) -> Any:
    """A hashable key under which ids that _same_id() calls equal fall together."""
    if isinstance(value, bool):
        return ("bool", value)
    if isinstance(value, (int, float)):
        return ("number", value)
    if isinstance(value, str):
        return ("string", value)
    return ("other", repr(value))


def _same_id(a: Any, b: Any) -> bool:
    return type(a) is type(b) and a == b or (
        isinstance(a, (int, float)) and isinstance(b, (int, float))
        and not isinstance(a, bool) and not isinstance(b, bool) and a == b)


_LSP_HEADER = re.compile(r"^(?:content-length|content-type)\s*:", re.IGNORECASE)


def _unframe(value: str | bytes) -> str:
    """The message text: without a leading BOM or an LSP header block, if any."""
    text = value.decode("utf-8") if isinstance(value, bytes) else value
    text = text.lstrip("\ufeff")
    if _LSP_HEADER.match(text):
        for separator in ("\r\n\r\n", "\n\n"):
            head, found, body = text.partition(separator)
            if found:
                return body
    return text


def _parse(value: Any) -> Any:
    """Parsed JSON, or None when the text is not JSON (an unreadable request)."""
    if not isinstance(value, (str, bytes)):
        return value
    try:
        return json.loads(_unframe(value))
    except ValueError:
        return None


def _parse_strict(value: Any) -> Any:
    if not isinstance(value, (str, bytes)):
        return value
    return json.loads(_unframe(value))


def _short(value: Any, limit: int = 160) -> str:
    text = value if isinstance(value, str) else json.dumps(value)
    return text if len(text) <= limit else text[:limit] + f"... ({len(text)} chars)"


def _describe(error: jsonschema.ValidationError) -> str:
    best = jsonschema.exceptions.best_match([error]) or error
    where = "/".join(str(p) for p in best.absolute_path)
    return f"at /{where}: {best.message[:300]}"


# -- Swift sources --------------------------------------------------------------

_HANDLER_KEY = re.compile(r'"([^"\\]+)"\s*:\s*\.(?:immediate|deferred|started)\b')


# The agent's own protocol (front-end to neon-auth-agent over its socket) is not the interface
# schemas/openrpc.json describes.
_AGENT_SOURCES = {"AgentService.swift"}


def registered_method_names(sources: Path = REPO / "Sources") -> set[str]:
    """Method names registered in the Swift handler tables ("name": .immediate/.deferred/.started)
    of the stdio service (the agent's protocol aside)."""
    names = set()
    for path in sources.rglob("*.swift"):
        if path.name in _AGENT_SOURCES or "neon-auth-agent" in path.parts:
            continue
        names.update(_HANDLER_KEY.findall(path.read_text(encoding="utf-8", errors="replace")))
    return names
