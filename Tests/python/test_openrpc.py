"""The OpenRPC document itself: structure, schemas, examples, coverage of the Swift sources.

The OpenRPC meta-schema is not shipped by any Python package, so the structure
is checked against openrpc-1.3-meta-schema.json beside this file, a draft-07
schema written from the OpenRPC 1.3 specification (its embedded JSON Schemas
are checked against the draft-07 meta-schema that jsonschema ships). What a
schema cannot say (unique names, resolvable references) is checked here.
"""

from __future__ import annotations

import base64
import copy
import json

import jsonschema
import pytest

from neon_auth_contract import META_SCHEMA_PATH, Contract, registered_method_names

EXPECTED_METHODS = {"sign", "openSession", "closeSession", "status", "rpc.discover",
                    "initialize", "initialized", "shutdown", "exit"}
TRANSPORT = {-32700, -32600, -32601, -32603}
CREDENTIAL_SOURCES = {-32020, -32021, -32022}
EXPECTED_ERRORS = {
    "sign": TRANSPORT | {-32602} | CREDENTIAL_SOURCES,
    "openSession": TRANSPORT | {-32602, -32001, -32002, -32003, -32004, -32005, -32006, -32007, -32023} | CREDENTIAL_SOURCES,
    # -32005: every request still waiting at the exit deadline gets it.
    "closeSession": TRANSPORT | {-32602, -32005, -32006, -32010, -32011},
    "status": TRANSPORT | {-32602, -32005},
    "rpc.discover": TRANSPORT | {-32602},
    "initialize": TRANSPORT,
    "initialized": TRANSPORT,
    "shutdown": TRANSPORT,
    "exit": TRANSPORT,
}


@pytest.fixture(scope="module")
def meta_validator(contract: Contract) -> jsonschema.Draft7Validator:
    meta = json.loads(META_SCHEMA_PATH.read_text(encoding="utf-8"))
    jsonschema.Draft7Validator.check_schema(meta)
    return jsonschema.Draft7Validator(meta)


# -- the file ---------------------------------------------------------------------

def test_file_is_formatted_for_embedding(contract: Contract):
    text = contract.text
    assert text.endswith("}\n") and not text.endswith("\n\n"), "one trailing newline"
    assert "\r" not in text and "\t" not in text
    canonical = {json.dumps(contract.doc, indent=2, ensure_ascii=a) + "\n" for a in (True, False)}
    assert text in canonical, "keep the file formatted as json.dumps(doc, indent=2) + newline (2-space indent)"
    assert len(text.encode("utf-8")) < 60 * 1024, "keep it under 60 KB: it is embedded in the binary"


def test_header(contract: Contract):
    doc = contract.doc
    assert doc["openrpc"] == "1.3.2"
    assert doc["info"]["title"] == "neon-auth"
    assert doc["info"]["version"] == "0.1.0"


def test_transport_extension(contract: Contract):
    x = contract.doc["x-neon-auth"]
    assert x["framing"] == ["newline-delimited", "content-length"]
    assert x["batches"] is True and x["notifications"] is True
    assert x["responseOrder"] == "any; match by id"
    assert x["jsonrpcVersion"] == "2.0" and x["paramStructure"] == "by-name"
    assert x["maxMessageBytes"]["default"] == 1048576
    assert set(x["conventions"]) >= {"errorData", "x-params-constraints", "x-params-ignored"}


# -- meta-schema --------------------------------------------------------------------

def test_document_matches_openrpc_meta_schema(contract: Contract, meta_validator):
    problems = [f"/{'/'.join(map(str, e.absolute_path))}: {e.message[:200]}"
                for e in meta_validator.iter_errors(contract.doc)]
    assert not problems, "\n".join(problems)


def _mutations():
    def drop(path):
        def f(doc):
            node = doc
            for key in path[:-1]:
                node = node[key]
            del node[path[-1]]
        return f

    def setv(path, value):
        def f(doc):
            node = doc
            for key in path[:-1]:
                node = node[key]
            node[path[-1]] = value
        return f

    return {
        "no info.version": drop(["info", "version"]),
        "no methods": drop(["methods"]),
        "method without params": drop(["methods", 0, "params"]),
        "method without result": drop(["methods", 0, "result"]),
        "unknown top-level member": setv(["neonAuth"], {}),
        "unknown method member": setv(["methods", 0, "paramsRules"], {}),
        "bad paramStructure": setv(["methods", 0, "paramStructure"], "named"),
        "error with extra member": setv(["components", "errors", "InvalidParams", "x-data-schema"], {}),
        "error code not an integer": setv(["components", "errors", "InvalidParams", "code"], "-32602"),
        "schema not draft-07": setv(["methods", 0, "params", 3, "schema", "type"], 5),
        "content descriptor without schema": drop(["methods", 0, "params", 3, "schema"]),
        "example pairing without params": drop(["methods", 0, "examples", 0, "params"]),
        "openrpc 1.2": setv(["openrpc"], "1.2.6"),
    }


@pytest.mark.parametrize("name", sorted(_mutations()))
def test_meta_schema_catches(name, contract: Contract, meta_validator):
    doc = copy.deepcopy(contract.doc)
    _mutations()[name](doc)
    assert not meta_validator.is_valid(doc), f"the meta-schema accepted a document with {name}"


def test_references_resolve(contract: Contract):
    problems = []
    for where, target in contract.references():
        if not target.startswith("#"):
            problems.append(f"{where}: non-local reference {target}")
            continue
        try:
            contract.pointer_get(target[1:])
        except (KeyError, IndexError, ValueError):
            problems.append(f"{where}: unresolved reference {target}")
    assert not problems, "\n".join(problems)


def _embedded_schemas(contract: Contract):
    for name in contract.methods:
        method, pointer = contract.methods[name]
        for descriptor, dpointer in contract.params(name):
            yield f"{dpointer}/schema", descriptor["schema"]
        yield contract.result_pointer(name), contract.pointer_get(contract.result_pointer(name))
        if "x-params-constraints" in method:
            yield f"{pointer}/x-params-constraints", method["x-params-constraints"]
    for key, schema in contract.doc["components"].get("schemas", {}).items():
        yield f"/components/schemas/{key}", schema
    for code, (error, pointer) in contract.error_components.items():
        yield f"{pointer}/data", error["data"]


def test_embedded_schemas_are_valid_draft7(contract: Contract):
    problems = []
    for pointer, schema in _embedded_schemas(contract):
        try:
            jsonschema.Draft7Validator.check_schema(schema)
        except jsonschema.SchemaError as exc:
            problems.append(f"{pointer}: {exc.message[:200]}")
    assert not problems, "\n".join(problems)


# -- methods ------------------------------------------------------------------------

def test_methods_are_the_interface(contract: Contract):
    names = [contract.deref(m, "")[0]["name"] for m in contract.doc["methods"]]
    assert len(names) == len(set(names)), "method names must be unique"
    assert set(names) == EXPECTED_METHODS


def test_registered_swift_methods_are_documented(contract: Contract):
    registered = registered_method_names()
    assert registered, "found no handler table in Sources/ (\"name\": .immediate/.deferred)"
    missing = registered - set(contract.methods)
    assert not missing, f"methods served by the Swift sources but not documented: {sorted(missing)}"


@pytest.mark.parametrize("name", sorted(EXPECTED_METHODS))
def test_method_shape(name, contract: Contract):
    method = contract.method(name)
    assert method["paramStructure"] == "by-name"
    assert method.get("summary") and method.get("description")
    assert method.get("examples"), "at least one example pairing"
    names = [d["name"] for d, _ in contract.params(name)]
    assert len(names) == len(set(names)), "param names must be unique"
    for descriptor, _ in contract.params(name):
        assert descriptor.get("description"), f"param {descriptor['name']} needs a description"
        assert "required" in descriptor, f"param {descriptor['name']}: say whether it is required"


@pytest.mark.parametrize("name", sorted(EXPECTED_METHODS))
def test_method_errors(name, contract: Contract):
    method, pointer = contract.methods[name]
    codes = [contract.deref(e, "")[0]["code"] for e in method["errors"]]
    assert len(codes) == len(set(codes)), "each code once"
    assert set(codes) == EXPECTED_ERRORS[name]
    for entry in method["errors"]:
        if contract.deref(entry, "")[0]["code"] in TRANSPORT:
            assert set(entry) == {"$ref"} and entry["$ref"].startswith("#/components/errors/"), \
                "transport errors are referenced from components/errors"
    assert contract.transport_codes == TRANSPORT


def test_error_components(contract: Contract):
    errors = contract.doc["components"]["errors"]
    codes = [e["code"] for e in errors.values()]
    assert len(codes) == len(set(codes)), "each code once in components/errors"
    assert set(codes) == set().union(*EXPECTED_ERRORS.values())
    for key, error in errors.items():
        assert error["message"].strip(), key
        data = error.get("data")
        assert isinstance(data, dict), f"{key}: data must be the JSON Schema of the error's data"
        assert data.get("x-presence") in {"always", "sometimes", "never"}, key
        assert data.get("description"), key


def test_python_client_names_every_code(contract: Contract):
    """scripts/neon_auth.py has a NeonAuthError constant for each code of the document."""
    import sys
    from pathlib import Path
    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts"))
    from neon_auth import NeonAuthError
    constants = {value for name, value in vars(NeonAuthError).items() if name.isupper() and isinstance(value, int)}
    assert constants == {e["code"] for e in contract.doc["components"]["errors"].values()}
    assert NeonAuthError.TLS_FAILURE == -32007


ERROR_DATA_SAMPLES = [
    (-32600, {"limit": 1048576}, True),
    (-32600, {"limit": "1 MiB"}, False),
    (-32602, {"field": "orgId"}, True),
    (-32602, {"field": "orgId", "value": "acme"}, False),
    (-32001, {"errors": [{"errorCode": "5", "errorMessage": "Invalid login credentials."}], "retryable": False}, True),
    (-32001, {"errors": [], "retryable": False, "cached": True, "retryAfterSeconds": 9.5}, True),
    (-32001, {"errors": [{"errorCode": 5, "errorMessage": "x"}], "retryable": False}, False),
    (-32001, {"errors": [], "retryable": True}, False),
    (-32002, {"retryable": True}, True),
    (-32002, {"retryable": True, "httpStatus": 503}, True),
    (-32002, {"retryable": True, "errors": [{"errorCode": "2", "errorMessage": "Service not available."}]}, True),
    (-32002, {"httpStatus": 503}, False),
    (-32003, {"retryable": True, "timeoutSeconds": 10}, True),
    (-32003, {"retryable": True}, False),
    (-32004, {"retryable": False, "httpStatus": 200, "reason": "HTML instead of JSON"}, True),
    (-32004, {"retryable": False, "reason": "x"}, False),
    (-32005, {"retryable": True}, True),
    (-32006, {"retryable": False, "reason": "neon-auth-agent was not found beside neon-auth"}, True),
    (-32006, {"retryable": True, "reason": "the agent ended while this request was in flight"}, True),
    (-32006, {"retryable": False}, False),
    (-32007, {"retryable": False, "reason": "expired", "host": "api.neoncrm.com"}, True),
    (-32007, {"retryable": False, "reason": "untrusted-issuer", "host": "127.0.0.1:8443"}, True),
    (-32007, {"retryable": False, "reason": "not-tls", "host": "localhost:1"}, True),
    (-32007, {"retryable": True, "reason": "expired", "host": "h"}, False),
    (-32007, {"retryable": False, "reason": "certificate expired", "host": "h"}, False),
    (-32007, {"retryable": False, "reason": "expired"}, False),
    (-32007, {"retryable": False, "reason": "expired", "host": "h", "detail": "x"}, False),
    (-32020, {"searched": ["environment: NEON_ORG_ID, NEON_API_KEY", "/home/u/.config/neon-auth/credentials.json"]}, True),
    (-32020, {"searched": []}, True),
    (-32021, {"path": "/home/u/.config/neon-auth/credentials.json", "reason": "mode 644"}, True),
    (-32021, {"path": "/x"}, False),
    (-32022, {"profiles": ["sandbox"]}, True),
    (-32023, {"retryable": True}, True),
    (-32023, {"retryable": False}, False),
    (-32023, None, False),
    (-32010, {}, False),
    (-32011, None, False),
]


@pytest.mark.parametrize("code,data,valid", ERROR_DATA_SAMPLES)
def test_error_data_schema(code, data, valid, contract: Contract):
    error, pointer = contract.error_components[code]
    schema = contract.error_object_schema(pointer)
    obj = {"code": code, "message": "m", "data": data}
    assert contract.schema_validator(schema).is_valid(obj) is valid


def test_error_data_presence(contract: Contract):
    for code, (error, pointer) in contract.error_components.items():
        validator = contract.schema_validator(contract.error_object_schema(pointer))
        without = validator.is_valid({"code": code, "message": "m"})
        assert without == (error["data"]["x-presence"] != "always"), code
        assert not validator.is_valid({"code": code, "message": "m", "stack": "x"}), "only code, message, data"
        assert not validator.is_valid({"code": code, "message": ""}), "message must not be empty"


# -- examples -----------------------------------------------------------------------

def _examples(contract: Contract):
    for name in sorted(contract.methods):
        for i, pairing in enumerate(contract.method(name).get("examples", [])):
            yield pytest.param(name, i, id=f"{name}: {contract.deref(pairing, '')[0]['name']}")


@pytest.mark.parametrize("name,index", list(_examples(Contract())))
def test_example_pairing_validates(name, index, contract: Contract):
    pairing, _ = contract.deref(contract.method(name)["examples"][index], "")
    declared = {d["name"] for d, _ in contract.params(name)}
    params = {}
    for example in pairing["params"]:
        example, _ = contract.deref(example, "")
        assert example["name"] in declared or contract.method(name).get("x-params-ignored"), \
            f"example param {example['name']} is not a declared param"
        params[example["name"]] = example["value"]
    assert not contract.params_errors(name, params)
    result, _ = contract.deref(pairing["result"], "")
    assert not contract.result_errors(name, result["value"]) or name == "rpc.discover"
    if name == "rpc.discover":
        assert not [e for e in contract.validator(contract.result_pointer(name)).iter_errors(result["value"])]
    if name == "sign" and "orgId" in params:
        expected = "Basic " + base64.b64encode(f"{params['orgId']}:{params['apiKey']}".encode()).decode()
        assert result["value"]["authorization"] == expected == result["value"]["headers"]["Authorization"]
        if "apiVersion" in params:
            assert result["value"]["headers"]["NEON-API-VERSION"] == params["apiVersion"]


# The params rules mirror the server's validation (Credential.validated, Params, NeonAPIVersion).
PARAMS_CASES = [
    ("sign", {"orgId": "acme", "apiKey": "k:e+y/=%&\u00e9"}, True),
    ("sign", {"orgId": "acme org", "apiKey": "key with inner spaces"}, True),
    ("sign", {"orgId": "acme", "apiKey": "k", "apiVersion": "2.11"}, True),
    ("sign", {"orgId": "acme", "apiKey": "k", "apiVersion": None}, True),
    ("sign", {"profile": "sandbox", "apiVersion": "2.1"}, True),
    ("sign", {}, True),
    ("sign", None, True),
    ("sign", {"orgId": "acme"}, False),
    ("sign", {"apiKey": "k"}, False),
    ("sign", {"orgId": "a:b", "apiKey": "k"}, False),
    ("sign", {"orgId": "", "apiKey": "k"}, False),
    ("sign", {"orgId": " acme", "apiKey": "k"}, False),
    ("sign", {"orgId": "acme\u00a0", "apiKey": "k"}, False),
    ("sign", {"orgId": "acme", "apiKey": "k\n"}, False),
    ("sign", {"orgId": "acme", "apiKey": "k\u0000ey"}, False),
    ("sign", {"orgId": "ac\u0085me", "apiKey": "k"}, False),
    ("sign", {"orgId": "acme", "apiKey": "k", "apiVersion": "3.0"}, False),
    ("sign", {"orgId": "acme", "apiKey": "k", "apiVersion": "2."}, False),
    ("sign", {"orgId": "acme", "apiKey": "k", "apiVersion": "2.1234567"}, False),
    ("sign", {"orgId": "acme", "apikey": "k"}, False),
    ("sign", {"profile": "sandbox", "orgId": "acme", "apiKey": "k"}, False),
    ("sign", {"profile": ""}, False),
    ("sign", ["acme", "k"], False),
    ("openSession", {"orgId": "acme", "apiKey": "k", "replace": "123"}, True),
    ("openSession", {"profile": "default", "replace": None}, True),
    ("openSession", {"orgId": "acme", "apiKey": "k", "apiVersion": "2.11"}, False),
    ("openSession", {"profile": "p", "apiKey": "k"}, False),
    ("closeSession", {"userSessionId": "123"}, True),
    ("closeSession", {"userSessionId": "123", "logout": True}, True),
    ("closeSession", {"userSessionId": "123", "logout": None}, True),
    ("closeSession", {"userSessionId": ""}, False),
    ("closeSession", {}, False),
    ("closeSession", {"userSessionId": "123", "logout": "yes"}, False),
    ("status", {}, True),
    ("status", None, True),
    ("status", {"verbose": True}, False),
    ("rpc.discover", {}, True),
    ("initialize", {"processId": None, "capabilities": {}, "rootUri": None}, True),
    ("exit", None, True),
]


@pytest.mark.parametrize("name,params,valid", PARAMS_CASES)
def test_params_schema(name, params, valid, contract: Contract):
    problems = contract.params_errors(name, params)
    assert (not problems) is valid, problems
