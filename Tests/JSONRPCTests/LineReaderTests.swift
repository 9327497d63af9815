import Testing
@testable import JSONRPC

/// A `LineReader.Event` copied out of the callback (the line buffer is only valid there).
enum LineEvent: Equatable, CustomStringConvertible {
    case line([UInt8])
    case tooLong

    var description: String {
        switch self {
        case .line(let bytes): return "line(\(String(decoding: bytes, as: UTF8.self).debugDescription))"
        case .tooLong: return "tooLong"
        }
    }
}

/// Feeds `chunks` to a fresh reader, then finishes it, and returns every event.
func lineEvents(_ chunks: [[UInt8]], maxLineBytes: Int) -> [LineEvent] {
    var reader = LineReader(maxLineBytes: maxLineBytes)
    var events: [LineEvent] = []
    let record: (LineReader.Event) -> Void = { event in
        switch event {
        case .line(let buffer): events.append(.line(Array(buffer)))
        case .tooLong: events.append(.tooLong)
        }
    }
    for chunk in chunks {
        chunk.withUnsafeBufferPointer { reader.consume($0, handle: record) }
    }
    reader.finish(handle: record)
    return events
}

/// What the framing rules say `stream` must produce, derived from the whole stream at once:
/// a UTF-8 BOM is dropped only at byte 0 of the stream; lines end at LF, and one CR right
/// before the LF belongs to the terminator; empty lines produce nothing; a final line without
/// LF counts; a line is accepted when it has at most `maxLineBytes` bytes, else reported once.
/// (Streams given to it never end in a bare CR and have no whitespace-only lines, the two
/// places where the rules leave room for interpretation.)
func modelEvents(_ stream: [UInt8], maxLineBytes: Int) -> [LineEvent] {
    var body = stream[...]
    if body.starts(with: bom) { body = body.dropFirst(3) }
    var events: [LineEvent] = []
    for piece in body.split(separator: 0x0A, omittingEmptySubsequences: false) {
        var line = piece
        if line.last == 0x0D { line = line.dropLast() }
        if line.isEmpty { continue }
        events.append(line.count > maxLineBytes ? .tooLong : .line(Array(line)))
    }
    return events
}

let bom: [UInt8] = [0xEF, 0xBB, 0xBF]
func bytes(_ text: String) -> [UInt8] { Array(text.utf8) }

/// Splits `stream` at the given cut points (sorted, duplicates give empty chunks).
func split(_ stream: [UInt8], at cuts: [Int]) -> [[UInt8]] {
    var chunks: [[UInt8]] = []
    var start = 0
    for cut in cuts.sorted() {
        chunks.append(Array(stream[start..<cut]))
        start = cut
    }
    chunks.append(Array(stream[start...]))
    return chunks
}

/// Every way of cutting `stream` into two or three pieces, byte-by-byte feeding, and some
/// random partitions (which may include empty chunks).
func partitions(of stream: [UInt8], seed: UInt64, random: Int = 200) -> [[[UInt8]]] {
    var result: [[[UInt8]]] = [[stream], stream.map { [$0] }]
    for i in 0...stream.count {
        result.append(split(stream, at: [i]))
        for j in i...stream.count where stream.count <= 80 { result.append(split(stream, at: [i, j])) }
    }
    var rng = SplitMix64(seed: seed)
    for _ in 0..<random {
        let cuts = (0..<rng.int(in: 1...12)).map { _ in rng.int(in: 0...stream.count) }
        result.append(split(stream, at: cuts))
    }
    return result
}

/// Checks that every partition gives `expected`; reports the first few mismatches precisely.
func expectSameEventsForEveryPartition(of stream: [UInt8], maxLineBytes: Int, expected: [LineEvent], seed: UInt64 = 1,
                                       sourceLocation: SourceLocation = #_sourceLocation) {
    var mismatches = 0
    for chunks in partitions(of: stream, seed: seed) {
        let events = lineEvents(chunks, maxLineBytes: maxLineBytes)
        if events != expected {
            mismatches += 1
            if mismatches <= 3 {
                let sizes = chunks.map(\.count)
                Issue.record("chunk sizes \(sizes): got \(events), expected \(expected)", sourceLocation: sourceLocation)
            }
        }
    }
    if mismatches > 3 { Issue.record("\(mismatches) partitions mismatched in all", sourceLocation: sourceLocation) }
}

@Suite("LineReader framing")
struct LineReaderTests {
    static let limit = 8

    // MARK: Plain behaviour (whole stream in one chunk, and every split of it)

    @Test func crlfIsStripped() {
        let stream = bytes("ab\r\ncd\r\nef\n")
        let expected: [LineEvent] = [.line(bytes("ab")), .line(bytes("cd")), .line(bytes("ef"))]
        #expect(lineEvents([stream], maxLineBytes: Self.limit) == expected)
        expectSameEventsForEveryPartition(of: stream, maxLineBytes: Self.limit, expected: expected)
    }

    @Test func bareCRIsPartOfTheLine() {
        let stream = bytes("a\rb\n")
        expectSameEventsForEveryPartition(of: stream, maxLineBytes: Self.limit, expected: [.line(bytes("a\rb"))])
    }

    @Test func blankLinesAreSkipped() {
        expectSameEventsForEveryPartition(of: bytes("\n\r\n\n"), maxLineBytes: Self.limit, expected: [])
        expectSameEventsForEveryPartition(of: bytes("\na\n\r\n\nb\n\n"), maxLineBytes: Self.limit,
                                          expected: [.line(bytes("a")), .line(bytes("b"))])
    }

    @Test func byteOrderMarkIsSkippedOnlyAtStreamStart() {
        let stream = bom + bytes("x\n") + bom + bytes("y\n")
        expectSameEventsForEveryPartition(of: stream, maxLineBytes: Self.limit,
                                          expected: [.line(bytes("x")), .line(bom + bytes("y"))])
    }

    @Test func byteOrderMarkBeforeABlankFirstLine() {
        expectSameEventsForEveryPartition(of: bom + bytes("\r\nx\n"), maxLineBytes: Self.limit, expected: [.line(bytes("x"))])
        // After a blank first line the stream has started: a BOM is data.
        expectSameEventsForEveryPartition(of: bytes("\n") + bom + bytes("x\n"), maxLineBytes: Self.limit,
                                          expected: [.line(bom + bytes("x"))])
    }

    @Test func partialByteOrderMarkIsData() {
        let stream: [UInt8] = [0xEF, 0xBB] + bytes("a\n")
        expectSameEventsForEveryPartition(of: stream, maxLineBytes: Self.limit, expected: [.line(stream.dropLast())])
    }

    @Test func finalLineWithoutNewlineIsDeliveredAtFinish() {
        var reader = LineReader(maxLineBytes: Self.limit)
        var events: [LineEvent] = []
        let record: (LineReader.Event) -> Void = { event in
            if case .line(let b) = event { events.append(.line(Array(b))) } else { events.append(.tooLong) }
        }
        bytes("one\ntwo").withUnsafeBufferPointer { reader.consume($0, handle: record) }
        #expect(events == [.line(bytes("one"))], "the unterminated line must wait for more input")
        reader.finish(handle: record)
        #expect(events == [.line(bytes("one")), .line(bytes("two"))])
        expectSameEventsForEveryPartition(of: bytes("one\ntwo"), maxLineBytes: Self.limit,
                                          expected: [.line(bytes("one")), .line(bytes("two"))])
    }

    @Test func finishWithNothingPendingDeliversNothing() {
        #expect(lineEvents([], maxLineBytes: Self.limit) == [])
        #expect(lineEvents([[]], maxLineBytes: Self.limit) == [])
        #expect(lineEvents([bytes("a\n")], maxLineBytes: Self.limit) == [.line(bytes("a"))])
    }

    // MARK: The length cap

    @Test func lineOfExactlyTheLimitIsAccepted() {
        let exact = bytes("12345678")
        #expect(exact.count == Self.limit)
        expectSameEventsForEveryPartition(of: exact + bytes("\nok\n"), maxLineBytes: Self.limit,
                                          expected: [.line(exact), .line(bytes("ok"))])
        // The CR of a CRLF does not count.
        expectSameEventsForEveryPartition(of: exact + bytes("\r\nok\n"), maxLineBytes: Self.limit,
                                          expected: [.line(exact), .line(bytes("ok"))])
        // Nor does the missing terminator of a final line.
        expectSameEventsForEveryPartition(of: exact, maxLineBytes: Self.limit, expected: [.line(exact)])
    }

    @Test func lineOneByteOverTheLimitIsRejectedOnce() {
        let over = bytes("123456789")
        expectSameEventsForEveryPartition(of: over + bytes("\nok\n"), maxLineBytes: Self.limit, expected: [.tooLong, .line(bytes("ok"))])
        expectSameEventsForEveryPartition(of: over + bytes("\r\nok\n"), maxLineBytes: Self.limit, expected: [.tooLong, .line(bytes("ok"))])
        expectSameEventsForEveryPartition(of: over, maxLineBytes: Self.limit, expected: [.tooLong])
    }

    @Test func veryLongLineIsRejectedOnceAndTheNextLineSurvives() {
        let long = [UInt8](repeating: UInt8(ascii: "x"), count: 10 * Self.limit + 3)
        expectSameEventsForEveryPartition(of: long + bytes("\nok\n"), maxLineBytes: Self.limit, expected: [.tooLong, .line(bytes("ok"))])
        expectSameEventsForEveryPartition(of: long, maxLineBytes: Self.limit, expected: [.tooLong])
        expectSameEventsForEveryPartition(of: long + bytes("\n") + long + bytes("\r\n12345678"), maxLineBytes: Self.limit,
                                          expected: [.tooLong, .tooLong, .line(bytes("12345678"))])
    }

    /// The BOM is skipped, so it is not part of the first line and does not count against the cap.
    @Test func byteOrderMarkDoesNotCountTowardsTheLimit() {
        let exact = bytes("12345678")
        expectSameEventsForEveryPartition(of: bom + exact + bytes("\nok\n"), maxLineBytes: Self.limit,
                                          expected: [.line(exact), .line(bytes("ok"))])
    }

    /// A too-long first line still starts the stream: a BOM on the second line is data.
    @Test(arguments: [LineReaderTests.limit + 1, LineReaderTests.limit + 2, 3 * LineReaderTests.limit])
    func byteOrderMarkAfterATooLongFirstLineIsData(firstLineLength: Int) {
        let stream = [UInt8](repeating: UInt8(ascii: "x"), count: firstLineLength) + bytes("\n") + bom + bytes("y\n")
        expectSameEventsForEveryPartition(of: stream, maxLineBytes: Self.limit, expected: [.tooLong, .line(bom + bytes("y"))])
    }

    /// Whatever the reader decides for a whitespace-only line longer than the cap (skip it as
    /// blank, or report it), the decision must not depend on how reads split the stream.
    @Test func longWhitespaceOnlyLineIsSplitIndependent() {
        let stream = bytes(String(repeating: " ", count: Self.limit + 2) + "\na\n")
        let reference = lineEvents([stream], maxLineBytes: Self.limit)
        #expect(reference.last == .line(bytes("a")))
        expectSameEventsForEveryPartition(of: stream, maxLineBytes: Self.limit, expected: reference)
    }

    // MARK: Property: random streams, random splits, against the model

    @Test func randomStreamsMatchTheModelUnderEverySplit() {
        var rng = SplitMix64(seed: 0x4C49_4E45)
        let alphabet = bytes("ab{}\":1,é") + [0xF0, 0x9F, 0x98, 0x80]
        var checked = 0
        for streamIndex in 0..<150 {
            var stream: [UInt8] = rng.chance(25) ? bom : []
            for _ in 0..<rng.int(in: 0...8) {
                switch rng.int(in: 0...9) {
                case 0: stream += bytes("\n")  // blank line
                case 1: stream += bytes("\r\n")  // blank CRLF line
                case 2: stream += bom + bytes("q\n")  // a BOM that is data (or, first, skipped)
                default:
                    // Lengths cluster around the limit; the first byte is never whitespace.
                    let length = rng.pick([1, 2, Self.limit - 1, Self.limit, Self.limit + 1, Self.limit + 2, 3 * Self.limit, rng.int(in: 1...20)])
                    var line: [UInt8] = [UInt8(ascii: "L")]
                    while line.count < length { line.append(rng.pick(alphabet)) }
                    if rng.chance(10) { line.insert(0x0D, at: rng.int(in: 1...line.count)) }  // a CR inside the line
                    stream += line + (rng.chance(40) ? bytes("\r\n") : bytes("\n"))
                }
            }
            if rng.chance(30) { stream += bytes("end") }  // final line without terminator
            let expected = modelEvents(stream, maxLineBytes: Self.limit)
            var mismatches = 0
            for chunks in partitions(of: stream, seed: UInt64(streamIndex), random: 40) {
                checked += 1
                let events = lineEvents(chunks, maxLineBytes: Self.limit)
                if events != expected {
                    mismatches += 1
                    if mismatches == 1 {
                        Issue.record("""
                            stream #\(streamIndex) \(String(decoding: stream, as: UTF8.self).debugDescription) (\(stream.count) bytes, \
                            starts with BOM: \(stream.starts(with: bom))) split as \(chunks.map(\.count)): \
                            got \(events), expected \(expected)
                            """)
                    }
                }
            }
        }
        #expect(checked > 10_000)
    }

    /// The model itself, on a hand-checked example, so that a wrong model cannot excuse the reader.
    @Test func modelSanity() {
        let stream = bom + bytes("ab\r\n\n12345678\n123456789\n") + bom + bytes("c\nend")
        #expect(modelEvents(stream, maxLineBytes: 8) == [
            .line(bytes("ab")), .line(bytes("12345678")), .tooLong, .line(bom + bytes("c")), .line(bytes("end")),
        ])
    }
}
