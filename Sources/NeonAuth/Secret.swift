/// A secret string (an API key or a user session ID) that never prints itself.
///
/// `description`, `debugDescription` and reflection all show `<redacted>`, so a secret that
/// slips into string interpolation, a log line, an error or a crash dump stays hidden. Only
/// code that builds a header, a login request or a result calls ``exposedValue``.
public struct Secret: Sendable, Hashable, CustomStringConvertible, CustomDebugStringConvertible, CustomReflectable {
    private let value: String

    /// Wraps `value`.
    public init(_ value: String) { self.value = value }

    /// The secret's bytes, for the few places that must send them.
    public var exposedValue: String { value }

    /// Byte equality of the UTF-8: two keys that differ only in Unicode normalization (`é` as
    /// one scalar or as `e` + combining accent) are different keys to NeonCRM, so they must
    /// never compare equal (Swift's `String ==` uses canonical equivalence).
    public static func == (lhs: Secret, rhs: Secret) -> Bool { lhs.value.utf8.elementsEqual(rhs.value.utf8) }

    /// Hashes the UTF-8 bytes, consistently with `==`.
    public func hash(into hasher: inout Hasher) {
        var value = self.value
        value.withUTF8 { hasher.combine(bytes: UnsafeRawBufferPointer($0)) }
    }

    public var description: String { "<redacted>" }
    public var debugDescription: String { "<redacted>" }
    public var customMirror: Mirror { Mirror(self, children: [], displayStyle: .struct) }
}
