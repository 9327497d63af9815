#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import Synchronization

/// Severity of a log line, from least to most verbose.
public enum LogLevel: Int, Sendable, Comparable, CaseIterable {
    case error = 0, warn, info, debug

    /// Parses `error`, `warn`, `info` or `debug`.
    public init?(name: String) {
        switch name {
        case "error": self = .error
        case "warn", "warning": self = .warn
        case "info": self = .info
        case "debug": self = .debug
        default: return nil
        }
    }

    public var name: String { ["error", "warn", "info", "debug"][rawValue] }

    public static func < (lhs: LogLevel, rhs: LogLevel) -> Bool { lhs.rawValue < rhs.rawValue }
}

/// A line logger for a file descriptor (stderr) that never blocks the service.
///
/// Callers pass only non-secret text (org IDs, profile names, counts, error codes); values
/// wrapped in `Secret` print as `<redacted>`. When the descriptor would block (a client that
/// pipes stderr and never reads it), the line is dropped and counted instead of waited for.
public final class Logger: Sendable {
    /// The most verbose level that is written.
    public let level: LogLevel
    private let fd: Int32
    private let program: String
    private let droppedLines = Mutex(0)
    /// Where lines go instead of `fd` (see ``route(through:)``).
    private let router = Mutex<(@Sendable ([UInt8]) -> Bool)?>(nil)

    /// - Parameters:
    ///   - level: lines above this level are skipped.
    ///   - fd: the descriptor to write to (2 for stderr).
    ///   - program: the name each line starts with.
    public init(level: LogLevel, fd: Int32 = 2, program: String = "neon-auth") {
        self.level = level
        self.fd = fd
        self.program = program
    }

    /// Sends every later line to `write` instead of the descriptor: for a stderr that is the
    /// protocol's own pipe or socket (`2>&1`), so that lines go out between whole answers,
    /// never inside one. `write` returns `false` when it dropped the line (counted).
    public func route(through write: @escaping @Sendable ([UInt8]) -> Bool) {
        router.withLock { $0 = write }
    }

    /// Writes whole lines that are already formatted (another process's log, relayed) the way
    /// this logger writes its own.
    public func emit(lines: [UInt8]) {
        guard !lines.isEmpty else { return }
        if let write = router.withLock({ $0 }) {
            if !write(lines) { droppedLines.withLock { $0 += 1 } }
            return
        }
        droppedLines.withLock { dropped in
            var pfd = pollfd(fd: fd, events: Int16(POLLOUT), revents: 0)
            guard poll(&pfd, 1, 0) == 1, pfd.revents & Int16(POLLOUT) != 0 else {
                dropped += 1
                return
            }
            _ = lines.withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
        }
    }

    /// Lines dropped so far because the descriptor would have blocked.
    public var dropped: Int { droppedLines.withLock { $0 } }

    /// Whether lines at `level` are written (use it to skip building costly messages).
    public func enabled(_ level: LogLevel) -> Bool { level <= self.level }

    /// Writes `PROGRAM: LEVEL: message` as one line if `level` is enabled.
    public func log(_ level: LogLevel, _ message: @autoclosure () -> String) {
        guard enabled(level) else { return }
        var line = Array("\(program): \(level.name): ".utf8)
        line.append(contentsOf: message().utf8.map { $0 == 0x0A || $0 == 0x0D ? 0x20 : $0 })
        line.append(0x0A)
        emit(lines: line)
    }

    public func error(_ message: @autoclosure () -> String) { log(.error, message()) }
    public func warn(_ message: @autoclosure () -> String) { log(.warn, message()) }
    public func info(_ message: @autoclosure () -> String) { log(.info, message()) }
    public func debug(_ message: @autoclosure () -> String) { log(.debug, message()) }
}

