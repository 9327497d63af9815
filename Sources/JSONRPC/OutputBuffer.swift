#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// A growable byte buffer owned by one thread, for the answers of one read.
///
/// The reading thread writes every answer it gives at once (fast paths and immediate handlers)
/// here, without a lock, a reference count or a uniqueness check per append, then hands the
/// whole read's output to ``OutputSink/submit(_:)`` in one call. Not copyable: exactly one owner
/// frees its memory.
public struct OutputBuffer {
    @usableFromInline var base: UnsafeMutablePointer<UInt8>
    @usableFromInline var used: Int
    /// Bytes written so far.
    public var count: Int { used }
    @usableFromInline var capacity: Int

    /// - Parameter capacity: the initial capacity in bytes (it grows as needed).
    public init(capacity: Int = 64 << 10) {
        self.capacity = max(capacity, 64)
        base = .allocate(capacity: self.capacity)
        used = 0
    }

    /// Frees the memory (the buffer must not be used after).
    public func release() { base.deallocate() }

    /// Room for `n` more bytes: returns where they go; ``commit(_:)`` then counts those written.
    @inlinable @inline(__always)
    public mutating func reserve(_ n: Int) -> UnsafeMutablePointer<UInt8> {
        if capacity - used < n { grow(n) }
        return base + used
    }

    /// Counts `n` bytes written at the pointer ``reserve(_:)`` returned (at most as many as reserved).
    @inlinable @inline(__always)
    public mutating func commit(_ n: Int) { used += n }

    /// Appends `n` bytes from `bytes`.
    @inlinable @inline(__always)
    public mutating func append(_ bytes: UnsafePointer<UInt8>, count n: Int) {
        let to = reserve(n)
        to.update(from: bytes, count: n)
        used += n
    }

    /// Appends one byte.
    @inlinable @inline(__always)
    public mutating func append(_ byte: UInt8) {
        reserve(1).pointee = byte
        used += 1
    }

    /// Appends the bytes of an array.
    public mutating func append(contentsOf bytes: [UInt8]) {
        bytes.withUnsafeBufferPointer { if let start = $0.baseAddress { append(start, count: $0.count) } }
    }

    /// Drops the bytes from `mark` on (a mark is an earlier ``count``).
    public mutating func truncate(to mark: Int) {
        precondition(mark >= 0 && mark <= used)
        used = mark
    }

    /// Empties the buffer. Its capacity is kept unless it grew past `keepingAtMost` bytes.
    public mutating func removeAll(keepingAtMost limit: Int = 1 << 20) {
        used = 0
        if capacity > limit {
            base.deallocate()
            capacity = 64 << 10
            base = .allocate(capacity: capacity)
        }
    }

    /// The bytes written, valid until the buffer is next changed.
    public var bytes: UnsafeRawBufferPointer { UnsafeRawBufferPointer(start: base, count: count) }

    /// The bytes written, as an array (for tests and the general path).
    public var array: [UInt8] { Array(UnsafeBufferPointer(start: base, count: count)) }

    @usableFromInline
    mutating func grow(_ n: Int) {
        var newCapacity = capacity * 2
        while newCapacity - count < n { newCapacity *= 2 }
        let newBase = UnsafeMutablePointer<UInt8>.allocate(capacity: newCapacity)
        newBase.update(from: base, count: count)
        base.deallocate()
        base = newBase
        capacity = newCapacity
    }
}
