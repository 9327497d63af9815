import JSONRPC

/// One error NeonCRM reported in an API v1 `errors.error` list.
public struct NeonV1Error: Sendable, Equatable {
    /// NeonCRM's `errorCode` as text (it is sent as a string or a number).
    public var code: String
    /// NeonCRM's `errorMessage`.
    public var message: String

    public init(code: String, message: String) {
        self.code = code
        self.message = message
    }
}

/// Why a NeonCRM call failed.
public enum NeonError: Error, Sendable, Equatable {
    /// NeonCRM answered FAIL for the credentials (wrong org ID or API key, or no permission).
    /// `cachedFor` is set (seconds left) when the pool answered from its memory of a rejection.
    case credentialsRejected([NeonV1Error], cachedFor: Double? = nil)
    /// NeonCRM could not be reached, or said it is unavailable (HTTP 5xx/429, v1 errors 1 and 2).
    case unavailable(httpStatus: Int?, errors: [NeonV1Error])
    /// No whole answer arrived within the deadline.
    case timedOut
    /// NeonCRM answered something it should not (not JSON, HTML, SUCCESS without an id...).
    case unexpectedResponse(reason: String, httpStatus: Int)
    /// The call was abandoned because neon-auth is shutting down.
    case cancelled
    /// The login this call waited for was for an API key that the credentials file no longer
    /// holds (it changed while NeonCRM was answering); that session was logged out.
    case credentialsChanged
    /// The TLS handshake with NeonCRM or its certificate failed. Not retryable: a certificate
    /// does not fix itself within a login's deadline (a connection dropped mid-handshake is
    /// `.unavailable` instead).
    case tlsFailure(TLSFailure)
}

extension ErrorCode {
    /// -32001: NeonCRM rejected the credentials. `data`: `{"errors": [{"errorCode", "errorMessage"}], "retryable": false}`.
    public static let credentialsRejected = ErrorCode(rawValue: -32001)
    /// -32002: NeonCRM is unreachable or unavailable. `data`: `{"retryable": true, "httpStatus"?, "errors"?}`.
    public static let neonUnavailable = ErrorCode(rawValue: -32002)
    /// -32003: NeonCRM did not answer in time. `data`: `{"retryable": true, "timeoutSeconds"}`.
    public static let neonTimedOut = ErrorCode(rawValue: -32003)
    /// -32004: NeonCRM answered something unexpected. `data`: `{"retryable", "httpStatus", "reason"}`.
    public static let unexpectedResponse = ErrorCode(rawValue: -32004)
    /// -32005: neon-auth is shutting down and did not finish the call.
    public static let shuttingDown = ErrorCode(rawValue: -32005)
    /// -32007: the TLS connection to NeonCRM failed (certificate or handshake).
    /// `data`: `{"retryable": false, "reason", "host"}`.
    public static let tlsFailure = ErrorCode(rawValue: -32007)
    /// -32023: the API key changed in the credentials file while this call waited for its login
    /// (the session for the old key was logged out); retry. `data`: `{"retryable": true}`.
    public static let credentialsChanged = ErrorCode(rawValue: -32023)
    /// -32010: the user session ID was not issued by this process or is no longer pooled.
    public static let unknownSession = ErrorCode(rawValue: -32010)
    /// -32011: `closeSession` without `logout` on a session that has no holder left.
    public static let sessionNotHeld = ErrorCode(rawValue: -32011)
}

extension NeonError {
    /// The JSON-RPC error for this failure. NeonCRM's messages are passed through capped (at
    /// most 10 errors of 300 characters) and with every form of the credential redacted: the
    /// key raw, percent-encoded and in base64, and the Basic `org:key` pair in base64.
    public func rpcError(timeout: Double, redacting credential: Credential? = nil) -> RPCError {
        let forms = credential.map(Self.secretForms) ?? []
        func errorList(_ errors: [NeonV1Error]) -> JSONValue {
            .array(errors.prefix(10).map { error in
                // Redact first, then cap: a cap could otherwise cut a secret in half.
                func clean(_ text: String, limit: Int) -> String {
                    var text = text
                    for form in forms {
                        text = Self.redacting(form, in: text)
                    }
                    return String(text.prefix(limit))
                }
                return ["errorCode": .string(clean(error.code, limit: 20)), "errorMessage": .string(clean(error.message, limit: 300))]
            })
        }
        switch self {
        case .credentialsRejected(let errors, nil):
            return RPCError(.credentialsRejected, "NeonCRM rejected the credentials",
                            data: ["errors": errorList(errors), "retryable": false])
        case .credentialsRejected(let errors, let remaining?):
            let seconds = formatSeconds((remaining * 10).rounded(.up) / 10)
            return RPCError(.credentialsRejected,
                            "NeonCRM rejected the credentials (cached rejection: not retried for another \(seconds) s)",
                            data: ["errors": errorList(errors), "retryable": false, "cached": true,
                                   "retryAfterSeconds": .number(seconds)])
        case .unavailable(let status, let errors):
            var data: JSONObject = ["retryable": true]
            if let status { data["httpStatus"] = .number(String(status)) }
            if !errors.isEmpty { data["errors"] = errorList(errors) }
            let message = status.map { "NeonCRM is unavailable (HTTP \($0))" }
                ?? (errors.isEmpty ? "NeonCRM is unreachable" : "NeonCRM reported that the service is unavailable")
            return RPCError(.neonUnavailable, message, data: .object(data))
        case .timedOut:
            return RPCError(.neonTimedOut, "NeonCRM did not answer within \(formatSeconds(timeout)) s",
                            data: ["retryable": true, "timeoutSeconds": .number(formatSeconds(timeout))])
        case .unexpectedResponse(let reason, let status):
            return RPCError(.unexpectedResponse, "Unexpected response from NeonCRM: \(reason)",
                            data: ["retryable": .bool(status >= 500 || status == 429), "httpStatus": .number(String(status)),
                                   "reason": .string(reason)])
        case .cancelled:
            return RPCError(.shuttingDown, "neon-auth is shutting down", data: ["retryable": true])
        case .credentialsChanged:
            return RPCError(.credentialsChanged,
                            "The API key changed in the credentials file while this request waited for NeonCRM's login; the session of the old key was logged out: retry",
                            data: ["retryable": true])
        case .tlsFailure(let failure):
            return RPCError(.tlsFailure,
                            "TLS connection to NeonCRM at \(failure.host) failed (\(failure.reason.rawValue)): \(failure.reason.explanation)",
                            data: ["retryable": false, "reason": .string(failure.reason.rawValue), "host": .string(failure.host)])
        }
    }
}

extension NeonError {
    /// The forms in which a credential's secret could be echoed back by a server.
    static func secretForms(_ credential: Credential) -> [String] {
        let key = credential.apiKey.exposedValue
        guard !key.isEmpty else { return [] }
        let escaped = FormEncoding.escape(key)
        var forms: Set<String> = [key, escaped, escaped.replacing("%20", with: "+"),
                                  FormEncoding.escape(key, keeping: FormEncoding.isQueryAllowed),
                                  BasicAuth.base64(Array(key.utf8)),
                                  BasicAuth.authorization(for: credential).dropFirst("Basic ".count).description]
        // Base64 without padding, as it may appear inside longer encoded text.
        for form in Array(forms) where form.hasSuffix("=") {
            var trimmed = Substring(form)
            while trimmed.first == "=" { trimmed.removeFirst() }
            while trimmed.last == "=" { trimmed.removeLast() }
            forms.insert(String(trimmed))
        }
        return forms.filter { $0.count >= 4 }.sorted { $0.count > $1.count }
    }

    /// `text` with every occurrence of `form` replaced by `<redacted>`, matching case-insensitively
    /// scalar by scalar (a scalar matches when their lower-case mappings are equal), left to
    /// right without overlaps.
    static func redacting(_ form: String, in text: String) -> String {
        let needle = Array(form.unicodeScalars)
        guard !needle.isEmpty else { return text }
        let haystack = Array(text.unicodeScalars)
        guard haystack.count >= needle.count else { return text }
        @inline(__always) func same(_ a: Unicode.Scalar, _ b: Unicode.Scalar) -> Bool {
            if a == b { return true }
            if a.isASCII && b.isASCII {
                let x = a.value | 0x20, y = b.value | 0x20  // ASCII letters only differ in bit 5
                return x == y && x >= 0x61 && x <= 0x7A
            }
            return a.properties.lowercaseMapping == b.properties.lowercaseMapping
        }
        var out = String.UnicodeScalarView()
        var i = 0
        var found = false
        while i < haystack.count {
            if i + needle.count <= haystack.count, same(haystack[i], needle[0]) {
                var j = 1
                while j < needle.count && same(haystack[i + j], needle[j]) { j += 1 }
                if j == needle.count {
                    out.append(contentsOf: "<redacted>".unicodeScalars)
                    i += needle.count
                    found = true
                    continue
                }
            }
            out.append(haystack[i])
            i += 1
        }
        return found ? String(out) : text
    }
}

/// Formats seconds without a needless fraction (`30`, `0.5`).
func formatSeconds(_ seconds: Double) -> String {
    seconds == seconds.rounded() && abs(seconds) < 1e15 ? String(Int(seconds)) : String(seconds)
}
