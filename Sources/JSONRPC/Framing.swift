/// Splits the input stream into messages, choosing the framing from the first bytes.
///
/// When the stream (after an optional UTF-8 BOM) begins with a `Content-Length:` or
/// `Content-Type:` header, LSP-style framing is used for the rest of the session; otherwise
/// newline-delimited framing. The choice never depends on how reads split the bytes.
struct FrameDecoder {
    enum Event {
        /// One whole message.
        case message(UnsafeBufferPointer<UInt8>)
        /// A message over the length cap, discarded without being held whole.
        case tooLong
        /// An LSP header block without a usable `Content-Length`.
        case badHeader
    }

    private enum Mode {
        case detecting([UInt8])
        case lines(LineReader)
        case contentLength(ContentLengthReader)
    }

    private var mode = Mode.detecting([])
    let maxMessageBytes: Int

    init(maxMessageBytes: Int) { self.maxMessageBytes = maxMessageBytes }

    /// Feeds bytes. `onFraming` is called once if LSP framing is chosen.
    mutating func consume(_ bytes: UnsafeBufferPointer<UInt8>, onFraming: (Framing) -> Void, handle: (Event) -> Void) {
        switch mode {
        case .detecting(var seen):
            seen.append(contentsOf: bytes)
            guard let framing = Self.detect(seen, final: false) else {
                mode = .detecting(seen)
                return
            }
            start(framing, with: seen, onFraming: onFraming, handle: handle)
        case .lines(var reader):
            mode = .detecting([])  // release the reader's storage while it is borrowed
            reader.consume(bytes) { handle(Self.event($0)) }
            mode = .lines(reader)
        case .contentLength(var reader):
            mode = .detecting([])
            reader.consume(bytes, handle: handle)
            mode = .contentLength(reader)
        }
    }

    /// Delivers what end of input completes.
    mutating func finish(onFraming: (Framing) -> Void, handle: (Event) -> Void) {
        if case .detecting(let seen) = mode, !seen.isEmpty {
            start(Self.detect(seen, final: true) ?? .newlineDelimited, with: seen, onFraming: onFraming, handle: handle)
        }
        switch mode {
        case .lines(var reader): reader.finish { handle(Self.event($0)) }
        case .contentLength, .detecting: break  // an unfinished LSP message is dropped
        }
    }

    private mutating func start(_ framing: Framing, with seen: [UInt8], onFraming: (Framing) -> Void, handle: (Event) -> Void) {
        switch framing {
        case .newlineDelimited:
            var reader = LineReader(maxLineBytes: maxMessageBytes)
            seen.withUnsafeBufferPointer { buffer in reader.consume(buffer) { handle(Self.event($0)) } }
            mode = .lines(reader)
        case .contentLength:
            onFraming(.contentLength)
            var reader = ContentLengthReader(maxBodyBytes: maxMessageBytes)
            let body = seen.starts(with: [0xEF, 0xBB, 0xBF]) ? Array(seen.dropFirst(3)) : seen
            body.withUnsafeBufferPointer { reader.consume($0, handle: handle) }
            mode = .contentLength(reader)
        }
    }

    private static func event(_ event: LineReader.Event) -> Event {
        switch event {
        case .line(let bytes): return .message(bytes)
        case .tooLong: return .tooLong
        }
    }

    /// The framing the first bytes announce, or `nil` while they cannot tell yet.
    static func detect(_ seen: [UInt8], final: Bool) -> Framing? {
        let bom: [UInt8] = [0xEF, 0xBB, 0xBF]
        if !final, seen.count < 3, bom.starts(with: seen) { return nil }
        let start = seen.starts(with: bom) ? 3 : 0
        let head = seen[start...].prefix(15).map { $0 >= 0x41 && $0 <= 0x5A ? $0 + 0x20 : $0 }
        for header in ["content-length:", "content-type:"] {
            let expected = Array(header.utf8)
            let n = min(head.count, expected.count)
            guard head.prefix(n).elementsEqual(expected.prefix(n)) else { continue }
            if n == expected.count { return .contentLength }
            // A prefix of a header name so far: undecided unless input ended.
            return final ? .newlineDelimited : nil
        }
        return head.isEmpty && !final ? nil : .newlineDelimited
    }
}

/// LSP-style framing: header lines (`Name: value`, CRLF or LF) up to an empty line, then
/// exactly `Content-Length` bytes. Header names are case-insensitive; other headers (such as
/// `Content-Type: application/vscode-jsonrpc; charset=utf-8`) are accepted and ignored.
struct ContentLengthReader {
    let maxBodyBytes: Int
    /// Header bytes are capped so a peer cannot grow them without bound.
    static let maxHeaderBytes = 8 * 1024

    private var header: [UInt8] = []
    private var body: [UInt8] = []
    private var remaining = 0
    private var inBody = false
    private var discarding = false

    init(maxBodyBytes: Int) { self.maxBodyBytes = maxBodyBytes }

    mutating func consume(_ bytes: UnsafeBufferPointer<UInt8>, handle: (FrameDecoder.Event) -> Void) {
        var index = 0
        while index < bytes.count {
            if inBody {
                let take = min(remaining, bytes.count - index)
                if !discarding { body.append(contentsOf: UnsafeBufferPointer(rebasing: bytes[index..<index + take])) }
                index += take
                remaining -= take
                if remaining == 0 {
                    inBody = false
                    if !discarding { body.withUnsafeBufferPointer { handle(.message($0)) } }
                    body.removeAll(keepingCapacity: body.capacity <= 1 << 16)
                    discarding = false
                }
                continue
            }
            header.append(bytes[index])
            index += 1
            if header.count > Self.maxHeaderBytes {
                header.removeAll()
                handle(.badHeader)
                continue
            }
            guard header.last == 0x0A, let length = endOfHeaders() else { continue }
            header.removeAll(keepingCapacity: true)
            guard let length else {
                handle(.badHeader)
                continue
            }
            if length == 0 {
                handle(.message(UnsafeBufferPointer(start: nil, count: 0)))
                continue
            }
            inBody = true
            remaining = length
            if length > maxBodyBytes {
                discarding = true
                handle(.tooLong)
            } else {
                body.reserveCapacity(length)
            }
        }
    }

    /// When the header block is complete: `.some(length)` (`.some(nil)` if it has no valid
    /// Content-Length); `nil` while more header lines are expected.
    private func endOfHeaders() -> Int?? {
        // Split at LF bytes (a String would treat CRLF as one character), dropping a CR before
        // each LF. Complete when the block ends with an empty line; a stray blank line before
        // the headers is skipped.
        var lines = header.split(separator: 0x0A, omittingEmptySubsequences: false).map { line in
            line.last == 0x0D ? line.dropLast() : line
        }
        guard lines.count >= 3, lines[lines.count - 1].isEmpty, lines[lines.count - 2].isEmpty else { return nil }
        lines.removeAll { $0.isEmpty }
        guard !lines.isEmpty else { return nil }
        var length: Int? = nil
        for line in lines {
            guard let colon = line.firstIndex(of: UInt8(ascii: ":")) else { return .some(nil) }
            let name = String(decoding: line[..<colon], as: UTF8.self).trimmingSpaces.lowercased()
            let value = String(decoding: line[(colon + 1)...], as: UTF8.self).trimmingSpaces
            if name == "content-length" {
                guard !value.isEmpty, value.utf8.allSatisfy({ $0 >= 0x30 && $0 <= 0x39 }), let n = Int(value) else { return .some(nil) }
                length = n
            }
        }
        return .some(length)
    }
}

private extension String {
    var trimmingSpaces: Substring {
        var s = self[...]
        while let first = s.first, first == " " || first == "\t" { s = s.dropFirst() }
        while let last = s.last, last == " " || last == "\t" { s = s.dropLast() }
        return s
    }
}
