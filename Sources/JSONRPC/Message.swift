/// A JSON-RPC 2.0 request or notification as read from the wire.
public struct Request: Sendable {
    /// The id (`string`, `number` or `null`, kept exactly as read); `nil` for a notification.
    public var id: JSONValue?
    /// The method name.
    public var method: String
    /// `params` as given: an object, an array, or `nil` when absent (or `null`, which
    /// neon-auth treats as absent because widely used clients send it).
    public var params: JSONValue?

    /// Whether this is a notification (no `id` member), which gets no response.
    public var isNotification: Bool { id == nil }

    public init(id: JSONValue?, method: String, params: JSONValue? = nil) {
        self.id = id
        self.method = method
        self.params = params
    }
}

/// One element of an incoming message after envelope validation.
public enum IncomingCall: Sendable {
    /// A valid request or notification.
    case request(Request)
    /// Not a valid Request object: answer `error` with `id` (null when unreadable).
    case invalid(id: JSONValue, error: RPCError)
}

/// What one framed message (one line, or one Content-Length body) holds.
public enum IncomingMessage: Sendable {
    /// A single call.
    case single(IncomingCall)
    /// A non-empty batch.
    case batch([IncomingCall])
    /// A message that gets a single error response with id null (parse error, empty batch).
    case failure(RPCError)
}

/// Reads JSON-RPC 2.0 envelopes.
public enum MessageReader {
    /// Parses and validates one message.
    /// - Parameter bytes: the message, without its line terminator.
    /// - Returns: the calls it holds, or the error to answer with id null.
    public static func read(_ bytes: UnsafeBufferPointer<UInt8>) -> IncomingMessage {
        let value: JSONValue
        do {
            value = try JSONReader.parse(bytes)
        } catch {
            var reason = UTF8Validation.isValid(bytes) ? "Parse error: \(error.reason)" : "Parse error: invalid UTF-8"
            // A word typed at a terminal (`help`, `sign`): say what a request looks like.
            if let first = bytes.first(where: { $0 != 0x20 && $0 != 0x09 }),
               (UInt8(ascii: "a")...UInt8(ascii: "z")).contains(first | 0x20) {
                reason += #" (requests are JSON-RPC 2.0 objects, one per line, e.g. {"jsonrpc":"2.0","id":1,"method":"sign"}; see neon-auth --help)"#
            }
            return .failure(RPCError(.parseError, reason))
        }
        switch value {
        case .array(let elements):
            if elements.isEmpty { return .failure(RPCError(.invalidRequest, "Invalid Request: empty batch")) }
            return .batch(elements.map(call(from:)))
        default:
            return .single(call(from: value))
        }
    }

    /// Validates one Request object.
    public static func call(from value: JSONValue) -> IncomingCall {
        guard case .object(let object) = value else {
            return .invalid(id: .null, error: RPCError(.invalidRequest, "Invalid Request: expected an object"))
        }
        // The id, when it is of a valid type, is echoed even if something else is wrong.
        var id: JSONValue? = nil
        var idError: String? = nil
        if let rawID = object["id"] {
            switch rawID {
            case .string, .number, .null: id = rawID
            default: idError = "Invalid Request: id must be a string, a number or null"
            }
        }
        let replyID = id ?? .null
        if let idError { return .invalid(id: .null, error: RPCError(.invalidRequest, idError)) }
        guard object["jsonrpc"] == .string("2.0") else {
            return .invalid(id: replyID, error: RPCError(.invalidRequest, "Invalid Request: jsonrpc must be \"2.0\""))
        }
        guard case .string(let method)? = object["method"] else {
            return .invalid(id: replyID, error: RPCError(.invalidRequest, "Invalid Request: method must be a string"))
        }
        var params: JSONValue? = nil
        switch object["params"] {
        case nil, .null?: params = nil
        case .object?, .array?: params = object["params"]
        default:
            return .invalid(id: replyID, error: RPCError(.invalidRequest, "Invalid Request: params must be an object or an array"))
        }
        return .request(Request(id: id, method: method, params: params))
    }
}

/// Writes JSON-RPC 2.0 responses.
public enum ResponseWriter {
    /// The response object for a success.
    public static func success(id: JSONValue, result: JSONValue) -> JSONValue {
        .object(["jsonrpc": "2.0", "id": id, "result": result])
    }

    /// The response object for an error.
    public static func failure(id: JSONValue, error: RPCError) -> JSONValue {
        .object(["jsonrpc": "2.0", "id": id, "error": error.json])
    }
}
