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

    public var description: String { "<redacted>" }
    public var debugDescription: String { "<redacted>" }
    public var customMirror: Mirror { Mirror(self, children: [], displayStyle: .struct) }
}
