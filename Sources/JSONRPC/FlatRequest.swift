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
///
/// Byte offsets are `Int32` (a message is at most a few MiB; longer ones are not matched), so
/// that the whole value stays small and is scanned in place (see ``scan(_:into:)``).
public struct FlatRequest {
    /// Most params members the fast path looks at.
    public static let maxParams = 4

    /// The message's first byte (valid only during the call that received this value).
    @usableFromInline let storedBase: UnsafePointer<UInt8>
    @inlinable public var base: UnsafePointer<UInt8> { storedBase }
    /// The message's length in bytes.
    public let count: Int
    @usableFromInline var idStart: Int32 = 0, idEnd: Int32 = 0, methodStart: Int32 = 0, methodEnd: Int32 = 0
    /// (name start, name end, value start, value end) per params member.
    @usableFromInline var members: (SIMD4<Int32>, SIMD4<Int32>, SIMD4<Int32>, SIMD4<Int32>) = (.zero, .zero, .zero, .zero)
    /// Bit `i` set: params value `i` is printable ASCII only (0x20-0x7E).
    @usableFromInline var plainValues: UInt8 = 0
    @usableFromInline var storedParamCount = 0
    /// How many params members there are.
    @inlinable public var paramCount: Int { storedParamCount }

    /// An empty request over `bytes`, to be filled by ``scan(_:into:)``.
    public init(over bytes: UnsafeBufferPointer<UInt8>) {
        storedBase = bytes.baseAddress ?? UnsafePointer(bitPattern: 1)!
        count = bytes.count
    }

    /// The message bytes (valid only during the call that received this value).
    public var bytes: UnsafeBufferPointer<UInt8> { UnsafeBufferPointer(start: base, count: count) }
    /// The `id` token exactly as sent (a number lexeme, or a quoted string).
    @inlinable public var id: Range<Int> { Int(idStart)..<Int(idEnd) }
    /// The contents of the `method` string.
    @inlinable public var method: Range<Int> { Int(methodStart)..<Int(methodEnd) }

    /// Whether the method name is `name`.
    public func methodIs(_ name: [UInt8]) -> Bool {
        Int(methodEnd - methodStart) == name.count && name.withUnsafeBytes { memcmp(base + Int(methodStart), $0.baseAddress!, name.count) == 0 }
    }

    @inlinable func member(_ index: Int) -> SIMD4<Int32> {
        switch index {
        case 0: return members.0
        case 1: return members.1
        case 2: return members.2
        default: return members.3
        }
    }

    /// The name and string contents (byte ranges) of params member `index`.
    @inlinable public func param(at index: Int) -> (name: Range<Int>, value: Range<Int>) {
        let m = member(index)
        return (Int(m[0])..<Int(m[1]), Int(m[2])..<Int(m[3]))
    }

    /// Whether params value `index` holds printable ASCII only (0x20-0x7E; no escapes, by shape).
    @inlinable public func valueIsPlainASCII(_ index: Int) -> Bool { plainValues & (1 << UInt8(index)) != 0 }

    /// Whether the name of params member `index` is `name` (ASCII).
    @inlinable public func paramName(_ index: Int, is name: StaticString) -> Bool {
        let m = member(index)
        let length = Int(m[1] - m[0])
        return length == name.utf8CodeUnitCount && memcmp(base + Int(m[0]), name.utf8Start, length) == 0
    }

    mutating func addParam(name: Range<Int32>, value: Range<Int32>, plain: Bool) -> Bool {
        guard storedParamCount < Self.maxParams else { return false }
        let length = Int(name.upperBound - name.lowerBound)
        for index in 0..<paramCount {
            let other = member(index)
            if Int(other[1] - other[0]) == length, memcmp(base + Int(other[0]), base + Int(name.lowerBound), length) == 0 {
                return false
            }
        }
        let m = SIMD4(name.lowerBound, name.upperBound, value.lowerBound, value.upperBound)
        switch storedParamCount {
        case 0: members.0 = m
        case 1: members.1 = m
        case 2: members.2 = m
        default: members.3 = m
        }
        if plain { plainValues |= 1 << UInt8(storedParamCount) }
        storedParamCount += 1
        return true
    }

    /// Locates a request of the fast-path shape, or returns `nil` (then the general path decides).
    public static func scan(_ bytes: UnsafeBufferPointer<UInt8>) -> FlatRequest? {
        var request = FlatRequest(over: bytes)
        return scan(bytes, into: &request) ? request : nil
    }

    /// Locates a request of the fast-path shape in place: fills `request` (made with
    /// ``init(over:)`` for the same bytes) and returns `true`, or returns `false`.
    public static func scan(_ bytes: UnsafeBufferPointer<UInt8>, into request: inout FlatRequest) -> Bool {
        guard let start = bytes.baseAddress, bytes.count < Int(Int32.max) else { return false }
        var scanner = Scanner(p: start, count: Int32(bytes.count))
        return scanner.request(&request)
    }
}

/// The scanner behind ``FlatRequest/scan(_:into:)``: unchecked pointer reads (every read is
/// guarded by an index test against `count`), 8 bytes at a time inside strings.
private struct Scanner {
    let p: UnsafePointer<UInt8>
    let count: Int32
    var index: Int32 = 0

    @inline(__always) func at(_ i: Int32) -> UInt8 { p[Int(i)] }

    @inline(__always) mutating func skipWhitespace() {
        while index < count {
            let byte = at(index)
            guard byte == 0x20 || byte == 0x09 || byte == 0x0A || byte == 0x0D else { return }
            index += 1
        }
    }

    @inline(__always) mutating func expect(_ byte: UInt8) -> Bool {
        if index < count, at(index) == byte {  // the compact form: no whitespace
            index += 1
            return true
        }
        skipWhitespace()
        guard index < count, at(index) == byte else { return false }
        index += 1
        return true
    }

    /// Per 8 bytes: the high bit of each byte that is not plain printable ASCII (< 0x20,
    /// 0x7F or above) or is `"` or `\`. Exact as to whether any byte is flagged, and the
    /// lowest flagged byte is the first such byte (borrows only run upwards).
    @inline(__always) static func flags(_ v: UInt64) -> UInt64 {
        let ones: UInt64 = 0x0101_0101_0101_0101, high: UInt64 = 0x8080_8080_8080_8080
        let control = (v &- ones &* 0x20) & ~v
        let upper = v | (v &+ ones)  // 0x7F becomes 0x80; 0x80 and above keep their high bit
        let quote = v ^ (ones &* 0x22), backslash = v ^ (ones &* 0x5C)
        let isQuote = (quote &- ones) & ~quote, isBackslash = (backslash &- ones) & ~backslash
        return (control | upper | isQuote | isBackslash) & high
    }

    /// A string without escapes or control characters, valid UTF-8: its contents, and whether
    /// they are printable ASCII only.
    mutating func string(asciiOnly: Bool = false) -> (Range<Int32>, plain: Bool)? {
        guard expect(UInt8(ascii: "\"")) else { return nil }
        let start = index
        var plain = true
        while true {
            // Eight plain bytes at a time.
            while index + 8 <= count {
                let word = UnsafeRawPointer(p + Int(index)).loadUnaligned(as: UInt64.self)
                let flagged = Self.flags(UInt64(littleEndian: word))
                if flagged == 0 {
                    index += 8
                    continue
                }
                index += Int32(flagged.trailingZeroBitCount >> 3)
                break
            }
            guard index < count else { return nil }
            let byte = at(index)
            if byte == UInt8(ascii: "\"") {
                index += 1
                return (start..<(index - 1), plain)
            }
            if byte >= 0x20 && byte < 0x7F && byte != UInt8(ascii: "\\") {
                index += 1  // the tail of a string shorter than 8 bytes
                continue
            }
            if byte == UInt8(ascii: "\\") || byte < 0x20 { return nil }
            plain = false
            if byte == 0x7F {
                index += 1
                continue
            }
            guard !asciiOnly,
                  let length = UTF8Validation.sequenceLength(UnsafeBufferPointer(start: p, count: Int(count)), at: Int(index))
            else { return nil }
            index += Int32(length)
        }
    }

    /// A number lexeme (RFC 8259 grammar).
    mutating func number() -> Range<Int32>? {
        skipWhitespace()
        let start = index
        @inline(__always) func digit(_ i: Int32) -> Bool { i < count && at(i) &- UInt8(ascii: "0") < 10 }
        if index < count, at(index) == UInt8(ascii: "-") { index += 1 }
        guard digit(index) else { return nil }
        if at(index) == UInt8(ascii: "0") { index += 1 } else { while digit(index) { index += 1 } }
        if index < count, at(index) == UInt8(ascii: ".") {
            index += 1
            guard digit(index) else { return nil }
            while digit(index) { index += 1 }
        }
        if index < count, at(index) == UInt8(ascii: "e") || at(index) == UInt8(ascii: "E") {
            index += 1
            if index < count, at(index) == UInt8(ascii: "+") || at(index) == UInt8(ascii: "-") { index += 1 }
            guard digit(index) else { return nil }
            while digit(index) { index += 1 }
        }
        return start..<index
    }

    @inline(__always) func equals(_ range: Range<Int32>, _ text: StaticString) -> Bool {
        let length = Int(range.upperBound - range.lowerBound)
        guard length == text.utf8CodeUnitCount else { return false }
        let a = p + Int(range.lowerBound), b = text.utf8Start
        for i in 0..<length where a[i] != b[i] { return false }
        return true
    }

    /// Whether the bytes at `index` are `text` (then skipped).
    @inline(__always) mutating func skip(_ text: StaticString) -> Bool {
        let n = Int32(text.utf8CodeUnitCount)
        guard index + n <= count, memcmp(p + Int(index), text.utf8Start, Int(n)) == 0 else { return false }
        index += n
        return true
    }

    /// The `id` value: a number lexeme or a string without escapes (kept with its quotes).
    @inline(__always) mutating func idValue(_ pending: inout FlatRequest) -> Bool {
        skipWhitespace()
        guard index < count else { return false }
        if at(index) == UInt8(ascii: "\"") {
            guard let (contents, _) = string() else { return false }
            pending.idStart = contents.lowerBound - 1
            pending.idEnd = contents.upperBound + 1
        } else {
            guard let lexeme = number() else { return false }
            pending.idStart = lexeme.lowerBound
            pending.idEnd = lexeme.upperBound
        }
        return true
    }

    /// The `params` value: a flat object of string members.
    mutating func params(_ pending: inout FlatRequest) -> Bool {
        guard expect(UInt8(ascii: "{")) else { return false }
        skipWhitespace()
        if index < count, at(index) == UInt8(ascii: "}") {
            index += 1
            return true
        }
        while true {
            guard let (name, _) = string(), expect(UInt8(ascii: ":")), let (value, plain) = string(),
                  pending.addParam(name: name, value: value, plain: plain) else { return false }
            if expect(UInt8(ascii: ",")) { continue }
            return expect(UInt8(ascii: "}"))
        }
    }

    mutating func request(_ pending: inout FlatRequest) -> Bool {
        var sawId = false, sawMethod = false, sawVersion = false, sawParams = false
        // The compact form most clients send starts `{"jsonrpc":"2.0","id":`: matched as one
        // literal (the general loop below decides everything else, in any order).
        var afterValue = false
        if skip(#"{"jsonrpc":"2.0","id":"#) {
            guard idValue(&pending) else { return false }
            sawVersion = true
            sawId = true
            afterValue = true
        } else {
            guard expect(UInt8(ascii: "{")) else { return false }
        }
        while true {
            if !afterValue {
                // `"method":` and `"params":` as literals, any other key by the general rules.
                var methodValue = false
                if !sawMethod && skip(#""method":"#) {
                    methodValue = true
                } else if !sawParams && skip(#""params":"#) {
                    guard params(&pending) else { return false }
                    sawParams = true
                } else {
                    guard let (key, _) = string(asciiOnly: true), expect(UInt8(ascii: ":")) else { return false }
                    if equals(key, "jsonrpc") {
                        guard !sawVersion, let (value, _) = string(), equals(value, "2.0") else { return false }
                        sawVersion = true
                    } else if equals(key, "id") {
                        guard !sawId, idValue(&pending) else { return false }
                        sawId = true
                    } else if equals(key, "params") {
                        guard !sawParams, params(&pending) else { return false }
                        sawParams = true
                    } else if equals(key, "method") {
                        methodValue = true
                    } else {
                        return false
                    }
                }
                if methodValue {
                    guard !sawMethod, let (value, _) = string(asciiOnly: true) else { return false }
                    pending.methodStart = value.lowerBound
                    pending.methodEnd = value.upperBound
                    sawMethod = true
                }
            }
            afterValue = false
            if expect(UInt8(ascii: ",")) { continue }
            guard expect(UInt8(ascii: "}")) else { return false }
            break
        }
        skipWhitespace()
        return index == count && sawVersion && sawId && sawMethod
    }
}

/// A method's fast path: given a request of the flat shape, appends the complete response
/// object's bytes (without a line terminator) to `out` and returns `true`, or returns `false`
/// (leaving `out` as it was) to let the general path answer. It must answer exactly what the
/// general path would.
public typealias FastPath = @Sendable (borrowing FlatRequest, inout OutputBuffer) -> Bool
