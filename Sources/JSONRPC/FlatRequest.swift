#if canImport(Glibc)
import Glibc
#endif

/// A request in the one shape worth a fast path, located in its bytes without building a tree.
///
/// The shape: a single JSON object with exactly the members `jsonrpc` (`"2.0"`), `id` (a number,
/// or a string without escapes), `method` (an ASCII string without escapes) and optionally
/// `params`, a flat object of at most ``maxParams`` string members without escapes. Anything
/// else (notifications, batches, escapes, nesting, duplicates, other members) is not matched
/// and takes the general path, which is the reference: a fast path must answer exactly what the
/// general path would.
public struct FlatRequest {
    /// Most params members the fast path looks at.
    public static let maxParams = 4

    /// The message bytes (valid only during the call that received this value).
    public let bytes: UnsafeBufferPointer<UInt8>
    /// The `id` token exactly as sent (a number lexeme, or a quoted string).
    public fileprivate(set) var id: Range<Int>
    /// The contents of the `method` string.
    public fileprivate(set) var method: Range<Int>
    private var names: (Range<Int>, Range<Int>, Range<Int>, Range<Int>) = (0..<0, 0..<0, 0..<0, 0..<0)
    private var values: (Range<Int>, Range<Int>, Range<Int>, Range<Int>) = (0..<0, 0..<0, 0..<0, 0..<0)
    /// How many params members there are.
    public private(set) var paramCount = 0

    init(bytes: UnsafeBufferPointer<UInt8>, id: Range<Int>, method: Range<Int>) {
        self.bytes = bytes
        self.id = id
        self.method = method
    }

    /// Whether the method name is `name`.
    public func methodIs(_ name: [UInt8]) -> Bool {
        method.count == name.count && name.withUnsafeBytes { memcmp(bytes.baseAddress! + method.lowerBound, $0.baseAddress!, name.count) == 0 }
    }

    /// The name and string contents (byte ranges) of params member `index`.
    public func param(at index: Int) -> (name: Range<Int>, value: Range<Int>) {
        switch index {
        case 0: return (names.0, values.0)
        case 1: return (names.1, values.1)
        case 2: return (names.2, values.2)
        default: return (names.3, values.3)
        }
    }

    /// The contents of the string member `name` of params, if present.
    public func param(_ name: [UInt8]) -> Range<Int>? {
        for index in 0..<paramCount {
            let member = param(at: index)
            if bytes[member.name].elementsEqual(name) { return member.value }
        }
        return nil
    }

    mutating func addParam(name: Range<Int>, value: Range<Int>) -> Bool {
        guard paramCount < Self.maxParams else { return false }
        for index in 0..<paramCount {
            let other = param(at: index).name
            if other.count == name.count, memcmp(bytes.baseAddress! + other.lowerBound, bytes.baseAddress! + name.lowerBound, name.count) == 0 {
                return false
            }
        }
        switch paramCount {
        case 0: (names.0, values.0) = (name, value)
        case 1: (names.1, values.1) = (name, value)
        case 2: (names.2, values.2) = (name, value)
        default: (names.3, values.3) = (name, value)
        }
        paramCount += 1
        return true
    }

    /// Locates a request of the fast-path shape, or returns `nil` (then the general path decides).
    public static func scan(_ bytes: UnsafeBufferPointer<UInt8>) -> FlatRequest? {
        var scanner = Scanner(bytes: bytes)
        return scanner.request()
    }
}

private struct Scanner {
    let bytes: UnsafeBufferPointer<UInt8>
    var index = 0

    mutating func skipWhitespace() {
        while index < bytes.count, bytes[index] == 0x20 || bytes[index] == 0x09 || bytes[index] == 0x0A || bytes[index] == 0x0D {
            index += 1
        }
    }

    mutating func expect(_ byte: UInt8) -> Bool {
        skipWhitespace()
        guard index < bytes.count, bytes[index] == byte else { return false }
        index += 1
        return true
    }

    /// A string without escapes or control characters, valid UTF-8; returns its contents.
    mutating func string(asciiOnly: Bool = false) -> Range<Int>? {
        guard expect(UInt8(ascii: "\"")) else { return nil }
        let start = index
        while index < bytes.count {
            let byte = bytes[index]
            // Plain printable ASCII other than `"` and `\` is by far the common case.
            if byte >= 0x20 && byte < 0x80 && byte != UInt8(ascii: "\"") && byte != UInt8(ascii: "\\") {
                index += 1
                continue
            }
            if byte == UInt8(ascii: "\"") {
                index += 1
                return start..<(index - 1)
            }
            if byte == UInt8(ascii: "\\") || byte < 0x20 { return nil }
            if byte >= 0x80 {
                guard !asciiOnly, let length = UTF8Validation.sequenceLength(bytes, at: index) else { return nil }
                index += length
            } else {
                index += 1
            }
        }
        return nil
    }

    /// A number lexeme (RFC 8259 grammar).
    mutating func number() -> Range<Int>? {
        skipWhitespace()
        let start = index
        func digit(_ i: Int) -> Bool { i < bytes.count && bytes[i] &- UInt8(ascii: "0") < 10 }
        if index < bytes.count, bytes[index] == UInt8(ascii: "-") { index += 1 }
        guard digit(index) else { return nil }
        if bytes[index] == UInt8(ascii: "0") { index += 1 } else { while digit(index) { index += 1 } }
        if index < bytes.count, bytes[index] == UInt8(ascii: ".") {
            index += 1
            guard digit(index) else { return nil }
            while digit(index) { index += 1 }
        }
        if index < bytes.count, bytes[index] == UInt8(ascii: "e") || bytes[index] == UInt8(ascii: "E") {
            index += 1
            if index < bytes.count, bytes[index] == UInt8(ascii: "+") || bytes[index] == UInt8(ascii: "-") { index += 1 }
            guard digit(index) else { return nil }
            while digit(index) { index += 1 }
        }
        return start..<index
    }

    func equals(_ range: Range<Int>, _ text: StaticString) -> Bool {
        range.count == text.utf8CodeUnitCount && memcmp(bytes.baseAddress! + range.lowerBound, text.utf8Start, range.count) == 0
    }

    mutating func request() -> FlatRequest? {
        guard expect(UInt8(ascii: "{")) else { return nil }
        var id: Range<Int>? = nil, method: Range<Int>? = nil, sawVersion = false, sawParams = false
        var pending = FlatRequest(bytes: bytes, id: 0..<0, method: 0..<0)
        while true {
            guard let key = string(asciiOnly: true), expect(UInt8(ascii: ":")) else { return nil }
            if equals(key, "jsonrpc") {
                guard !sawVersion, let value = string(), equals(value, "2.0") else { return nil }
                sawVersion = true
            } else if equals(key, "id") {
                guard id == nil else { return nil }
                skipWhitespace()
                guard index < bytes.count else { return nil }
                if bytes[index] == UInt8(ascii: "\"") {
                    guard let contents = string() else { return nil }
                    id = (contents.lowerBound - 1)..<(contents.upperBound + 1)
                } else {
                    guard let lexeme = number() else { return nil }
                    id = lexeme
                }
            } else if equals(key, "method") {
                guard method == nil, let value = string(asciiOnly: true) else { return nil }
                method = value
            } else if equals(key, "params") {
                guard !sawParams, expect(UInt8(ascii: "{")) else { return nil }
                sawParams = true
                skipWhitespace()
                if index < bytes.count, bytes[index] == UInt8(ascii: "}") {
                    index += 1
                } else {
                    while true {
                        guard let name = string(), expect(UInt8(ascii: ":")), let value = string(),
                              pending.addParam(name: name, value: value) else { return nil }
                        if expect(UInt8(ascii: ",")) { continue }
                        guard expect(UInt8(ascii: "}")) else { return nil }
                        break
                    }
                }
            } else {
                return nil
            }
            if expect(UInt8(ascii: ",")) { continue }
            guard expect(UInt8(ascii: "}")) else { return nil }
            break
        }
        skipWhitespace()
        guard index == bytes.count, sawVersion, let id, let method else { return nil }
        pending.id = id
        pending.method = method
        return pending
    }
}

/// A method's fast path: given a request of the flat shape, appends the complete response
/// object's bytes to `out` and returns `true`, or returns `false` (leaving `out` as it was) to
/// let the general path answer. It must answer exactly what the general path would.
public typealias FastPath = @Sendable (FlatRequest, inout [UInt8]) -> Bool
