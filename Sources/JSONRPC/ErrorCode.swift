/// A JSON-RPC 2.0 error code. Open by design: applications add their own codes in
/// -32000...-32099 as static members in an extension.
public struct ErrorCode: RawRepresentable, Hashable, Sendable, CustomStringConvertible {
    public var rawValue: Int
    public init(rawValue: Int) { self.rawValue = rawValue }

    /// -32700: the message is not valid JSON (or not valid UTF-8).
    public static let parseError = ErrorCode(rawValue: -32700)
    /// -32600: the JSON is not a valid Request object.
    public static let invalidRequest = ErrorCode(rawValue: -32600)
    /// -32601: no such method.
    public static let methodNotFound = ErrorCode(rawValue: -32601)
    /// -32602: invalid method parameters.
    public static let invalidParams = ErrorCode(rawValue: -32602)
    /// -32603: an internal error of the server.
    public static let internalError = ErrorCode(rawValue: -32603)

    public var description: String { String(rawValue) }
}

/// A JSON-RPC error response's `error` member: `code`, `message` and optional `data`.
///
/// Messages and data must never carry secrets; construct them from static text, field
/// names and non-secret values only.
public struct RPCError: Error, Sendable, Equatable {
    public var code: ErrorCode
    public var message: String
    public var data: JSONValue?

    public init(_ code: ErrorCode, _ message: String, data: JSONValue? = nil) {
        self.code = code
        self.message = message
        self.data = data
    }

    /// The `error` object as JSON: exactly `code`, `message` and, when present, `data`.
    public var json: JSONValue {
        var object: JSONObject = ["code": .number(String(code.rawValue)), "message": .string(message)]
        if let data { object["data"] = data }
        return .object(object)
    }

    /// -32602 naming the field (and never its value).
    public static func invalidParams(_ message: String, field: String) -> RPCError {
        RPCError(.invalidParams, message, data: ["field": .string(field)])
    }
}
