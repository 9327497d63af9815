import Foundation
import Testing
import JSONRPC
@testable import NeonAuth

@Suite("API v1 login/logout parsing")
struct NeonV1ParserTests {
    func response(_ body: String, status: Int = 200) -> HTTPResponse {
        HTTPResponse(status: status, body: Array(body.utf8))
    }

    @Test("SUCCESS gives the session id, whatever its form", arguments: ["T1234567890123", "0123456789abcdef0123456789abcdef", "opaque/+="])
    func success(id: String) throws {
        let body = #"{"loginResponse":{"operationResult":"SUCCESS","responseMessage":"User logged in.","responseDateTime":"2026-11-29T10:00:00.000-06:00","userSessionId":"\#(id)"}}"#
        #expect(try NeonV1Parser.parseLogin(response(body)).exposedValue == id)
    }

    @Test("FAIL with errors.error as an array or a single object, at HTTP 200")
    func failVariants() {
        let array = #"{"loginResponse":{"operationResult":"FAIL","errors":{"error":[{"errorCode":"5","errorMessage":"Invalid login."},{"errorCode":6,"errorMessage":"Other"}]}}}"#
        let single = #"{"loginResponse":{"operationResult":"FAIL","errors":{"error":{"errorCode":"5","errorMessage":"Invalid login."}}}}"#
        #expect(throws: NeonError.credentialsRejected([NeonV1Error(code: "5", message: "Invalid login."), NeonV1Error(code: "6", message: "Other")])) {
            try NeonV1Parser.parseLogin(response(array))
        }
        #expect(throws: NeonError.credentialsRejected([NeonV1Error(code: "5", message: "Invalid login.")])) {
            try NeonV1Parser.parseLogin(response(single))
        }
    }

    @Test("v1 errors 1 and 2 mean NeonCRM is unavailable, not that the key is wrong", arguments: ["1", "2"])
    func transientCodes(code: String) {
        let body = #"{"loginResponse":{"operationResult":"FAIL","errors":{"error":{"errorCode":"\#(code)","errorMessage":"x"}}}}"#
        #expect(throws: NeonError.unavailable(httpStatus: nil, errors: [NeonV1Error(code: code, message: "x")])) {
            try NeonV1Parser.parseLogin(response(body))
        }
    }

    @Test("success is judged by operationResult, not by the HTTP status")
    func judgedByOperationResult() {
        let fail = #"{"loginResponse":{"operationResult":"FAIL","errors":{"error":[{"errorCode":"5","errorMessage":"no"}]}}}"#
        #expect(throws: NeonError.credentialsRejected([NeonV1Error(code: "5", message: "no")])) {
            try NeonV1Parser.parseLogin(response(fail, status: 200))
        }
    }

    @Test("answers NeonCRM should not give are unexpected responses")
    func unexpected() {
        #expect(throws: NeonError.unexpectedResponse(reason: "empty body", httpStatus: 200)) { try NeonV1Parser.parseLogin(response("")) }
        #expect(throws: NeonError.unexpectedResponse(reason: "body is not JSON", httpStatus: 200)) {
            try NeonV1Parser.parseLogin(response("<html><body>Maintenance</body></html>"))
        }
        #expect(throws: NeonError.unexpectedResponse(reason: "login SUCCESS without a userSessionId", httpStatus: 200)) {
            try NeonV1Parser.parseLogin(response(#"{"loginResponse":{"operationResult":"SUCCESS"}}"#))
        }
        #expect(throws: NeonError.unexpectedResponse(reason: "no loginResponse object", httpStatus: 200)) {
            try NeonV1Parser.parseLogin(response(#"{"somethingElse":{}}"#))
        }
        #expect(throws: NeonError.unexpectedResponse(reason: "operationResult is neither SUCCESS nor FAIL", httpStatus: 200)) {
            try NeonV1Parser.parseLogin(response(#"{"loginResponse":{"operationResult":"MAYBE"}}"#))
        }
    }

    @Test("HTTP 5xx and 429 mean unavailable", arguments: [500, 502, 503, 429])
    func serverErrors(status: Int) {
        #expect(throws: NeonError.unavailable(httpStatus: status, errors: [])) {
            try NeonV1Parser.parseLogin(response("<html>oops</html>", status: status))
        }
    }

    @Test("logout: SUCCESS, and FAIL with error 4")
    func logout() throws {
        try NeonV1Parser.parseLogout(response(#"{"logoutResponse":{"operationResult":"SUCCESS","responseMessage":"User logged out."}}"#))
        #expect(throws: NeonError.credentialsRejected([NeonV1Error(code: "4", message: "User session id is invalid.")])) {
            try NeonV1Parser.parseLogout(response(#"{"logoutResponse":{"operationResult":"FAIL","errors":{"error":[{"errorCode":"4","errorMessage":"User session id is invalid."}]}}}"#))
        }
    }

    @Test("NeonCRM messages that echo the key in any form are redacted and capped in the JSON-RPC error")
    func redaction() {
        let key = "SECRET-a1:b2+/=%& é"
        let credential = Credential(orgId: "acme", apiKey: Secret(key))
        let basic = BasicAuth.authorization(for: credential)
        let echoes = [key, FormEncoding.escape(key), Data(key.utf8).base64EncodedString(), basic,
                      "login.apiKey=" + FormEncoding.escape(key) + "&login.orgid=acme"]
        let errors = echoes.map { NeonV1Error(code: "5", message: "bad: \($0) end") }
            + [NeonV1Error(code: "5", message: String(repeating: "x", count: 5000)),
               // The key straddling the length cap, echoed as the code, and percent-encoded in lower case.
               NeonV1Error(code: key, message: String(repeating: "y", count: 290) + key),
               NeonV1Error(code: "5", message: FormEncoding.escape(key).lowercased())]
        let error = NeonError.credentialsRejected(errors).rpcError(timeout: 10, redacting: credential)
        let text = JSONWriter.string(error.json)
        #expect(error.code == .credentialsRejected)
        for form in NeonError.secretForms(credential) { #expect(!text.contains(form)) }
        #expect(!text.contains("SECRET"))
        #expect(!text.lowercased().contains("secret"))
        #expect(text.contains("bad: <redacted> end"))
        #expect(text.count < 3000, "messages are capped")
    }

    @Test("form encoding percent-encodes everything outside the unreserved set")
    func formEncoding() {
        #expect(FormEncoding.encode([("login.apiKey", "a+b/c=d&e%f:g é"), ("login.orgid", "acme")])
            == "login.apiKey=a%2Bb%2Fc%3Dd%26e%25f%3Ag%20%C3%A9&login.orgid=acme")
    }

    @Test("encodedBytes is encode's UTF-8")
    func formEncodedBytes() {
        for form in [[], [("", "")], [("login.apiKey", "a+b/c=d&e%f:g é"), ("login.orgid", "acme"), ("responseType", "json")]] {
            #expect(FormEncoding.encodedBytes(form) == Array(FormEncoding.encode(form).utf8))
        }
    }
}
