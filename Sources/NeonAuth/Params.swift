import JSONRPC

/// Reads named params of a request, answering -32602 naming the field (never its value).
struct Params {
    private let object: JSONObject

    /// - Parameters:
    ///   - params: the request's `params` (must be an object, or absent when nothing is required).
    ///   - allowed: every member name the method knows; any other is refused (catches typos).
    init(_ params: JSONValue?, allowed: Set<String>) throws(RPCError) {
        switch params {
        case nil: object = JSONObject()
        case .object(let o)?: object = o
        default: throw RPCError(.invalidParams, "Invalid params: params must be an object (by name)")
        }
        // The unknown name is not echoed: a pasted key could be sitting in its place.
        if object.members.contains(where: { !allowed.contains($0.key) }) {
            let known = allowed.isEmpty ? "this method takes no params" : "known members: " + allowed.sorted().joined(separator: ", ")
            throw RPCError(.invalidParams, "Invalid params: unknown member (\(known))")
        }
    }

    /// Whether the member is present (and not `null`).
    func has(_ name: String) -> Bool {
        switch object[name] {
        case nil, .null?: return false
        default: return true
        }
    }

    /// A required string member.
    func string(_ name: String) throws(RPCError) -> String {
        guard let value = object[name] else { throw .invalidParams("Invalid params: \(name) is required", field: name) }
        guard case .string(let s) = value else {
            throw .invalidParams("Invalid params: \(name) must be a string", field: name)
        }
        return s
    }

    /// An optional string member (`null` counts as absent).
    func optionalString(_ name: String) throws(RPCError) -> String? {
        switch object[name] {
        case nil, .null?: return nil
        case .string(let s)?: return s
        default: throw .invalidParams("Invalid params: \(name) must be a string", field: name)
        }
    }

    /// An optional boolean member (`null` counts as absent).
    func optionalBool(_ name: String) throws(RPCError) -> Bool? {
        switch object[name] {
        case nil, .null?: return nil
        case .bool(let b)?: return b
        default: throw .invalidParams("Invalid params: \(name) must be a boolean", field: name)
        }
    }

    /// A member name safe to print: unknown names are client input, so cap and sanitize them.
    static func printable(_ name: String) -> String {
        let cleaned = String(name.unicodeScalars.filter { !$0.properties.generalCategory.isControl }.prefix(40).map(Character.init))
        return cleaned.count < name.count ? cleaned + "…" : cleaned
    }
}

extension Unicode.GeneralCategory {
    var isControl: Bool { self == .control || self == .format }
}

extension Params {
    /// A member's raw value, if present (`null` included).
    func value(_ name: String) -> JSONValue? { object[name] }
}
