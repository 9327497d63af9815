import Testing
@testable import JSONRPC

@Suite("MessageReader envelope validation")
struct MessageReaderTests {
    // MARK: Helpers

    private func read(_ text: String) -> IncomingMessage { read(Array(text.utf8)) }

    private func read(_ bytes: [UInt8]) -> IncomingMessage {
        bytes.withUnsafeBufferPointer { MessageReader.read($0) }
    }

    private func single(_ text: String, sourceLocation: SourceLocation = #_sourceLocation) throws -> IncomingCall {
        guard case .single(let call) = read(text) else {
            Issue.record("expected a single call for \(text)", sourceLocation: sourceLocation)
            throw Unexpected()
        }
        return call
    }

    private func request(_ text: String, sourceLocation: SourceLocation = #_sourceLocation) throws -> Request {
        guard case .request(let request) = try single(text, sourceLocation: sourceLocation) else {
            Issue.record("expected a valid request for \(text)", sourceLocation: sourceLocation)
            throw Unexpected()
        }
        return request
    }

    /// Asserts `text` is a single invalid call answered with `code` and `id`.
    private func expectInvalid(_ text: String, id expectedID: JSONValue, code: ErrorCode = .invalidRequest,
                               sourceLocation: SourceLocation = #_sourceLocation) throws {
        guard case .invalid(let id, let error) = try single(text, sourceLocation: sourceLocation) else {
            Issue.record("expected an invalid call for \(text)", sourceLocation: sourceLocation)
            return
        }
        #expect(id == expectedID, "id for \(text)", sourceLocation: sourceLocation)
        #expect(error.code == code, "code for \(text)", sourceLocation: sourceLocation)
        #expect(error.code.rawValue == -32600, sourceLocation: sourceLocation)
    }

    private func failureCode(_ bytes: [UInt8]) -> Int? {
        if case .failure(let error) = read(bytes) { return error.code.rawValue }
        return nil
    }

    private struct Unexpected: Error {}

    // MARK: Valid calls

    @Test func validRequest() throws {
        let r = try request(#"{"jsonrpc":"2.0","id":1,"method":"sum","params":[1,2]}"#)
        #expect(r.id == .number("1"))
        #expect(r.method == "sum")
        #expect(r.params == [1, 2])
        #expect(!r.isNotification)
    }

    @Test func validRequestWithObjectParamsStringIDAndWhitespace() throws {
        let r = try request(" {\t\"method\" : \"login\", \"params\" : {\"a\":\"b\"}, \"id\" : \"x-1\", \"jsonrpc\" : \"2.0\"}\r\n ")
        #expect(r.id == .string("x-1"))
        #expect(r.method == "login")
        #expect(r.params == ["a": "b"])
    }

    @Test func notificationHasNoID() throws {
        let r = try request(#"{"jsonrpc":"2.0","method":"note","params":{}}"#)
        #expect(r.isNotification)
        #expect(r.id == nil)
        #expect(r.method == "note")
    }

    /// `"id": null` is a (discouraged) request, not a notification: it gets a response.
    @Test func nullIDIsARequest() throws {
        let r = try request(#"{"jsonrpc":"2.0","id":null,"method":"m"}"#)
        #expect(!r.isNotification)
        #expect(r.id == .null)
    }

    @Test func nullParamsAreTreatedAsAbsent() throws {
        let withNull = try request(#"{"jsonrpc":"2.0","id":2,"method":"m","params":null}"#)
        #expect(withNull.params == nil)
        let absent = try request(#"{"jsonrpc":"2.0","id":2,"method":"m"}"#)
        #expect(absent.params == nil)
        let empty = try request(#"{"jsonrpc":"2.0","id":2,"method":"m","params":[]}"#)
        #expect(empty.params == .array([]))
    }

    // MARK: Invalid calls

    @Test(arguments: [#""str""#, "1", "true", "false"])
    func scalarParamsAreInvalidAndEchoTheID(_ params: String) throws {
        try expectInvalid(#"{"jsonrpc":"2.0","id":7,"method":"m","params":\#(params)}"#, id: .number("7"))
        try expectInvalid(#"{"jsonrpc":"2.0","id":"abc","method":"m","params":\#(params)}"#, id: .string("abc"))
    }

    @Test func wrongOrMissingVersion() throws {
        try expectInvalid(#"{"jsonrpc":"1.0","id":3,"method":"m"}"#, id: .number("3"))
        try expectInvalid(#"{"id":3,"method":"m"}"#, id: .number("3"))
        try expectInvalid(#"{"jsonrpc":2.0,"id":3,"method":"m"}"#, id: .number("3"))
        try expectInvalid(#"{"jsonrpc":"2.0 ","id":3,"method":"m"}"#, id: .number("3"))
        try expectInvalid(#"{"jsonrpc":null,"method":"m"}"#, id: .null)
    }

    @Test func methodMustBeAString() throws {
        try expectInvalid(#"{"jsonrpc":"2.0","method":1}"#, id: .null)
        try expectInvalid(#"{"jsonrpc":"2.0","method":null}"#, id: .null)
        try expectInvalid(#"{"jsonrpc":"2.0","method":["m"]}"#, id: .null)
        try expectInvalid(#"{"jsonrpc":"2.0"}"#, id: .null)
        // With a readable id, the id is echoed.
        try expectInvalid(#"{"jsonrpc":"2.0","id":"q","method":{}}"#, id: .string("q"))
        try expectInvalid(#"{"jsonrpc":"2.0","id":5}"#, id: .number("5"))
    }

    @Test(arguments: [#"{"a":1}"#, "true", "false", "[1]", "{}"])
    func idOfWrongTypeIsInvalidWithNullID(_ id: String) throws {
        try expectInvalid(#"{"jsonrpc":"2.0","id":\#(id),"method":"m"}"#, id: .null)
    }

    @Test(arguments: ["1", #""x""#, "null", "true", "1.5"])
    func nonObjectMessageIsInvalid(_ text: String) throws {
        try expectInvalid(text, id: .null)
    }

    // MARK: Batches

    @Test(arguments: ["[]", " [ ] ", "[\n]"])
    func emptyBatchIsAFailure(_ text: String) {
        guard case .failure(let error) = read(text) else {
            Issue.record("expected a failure for \(text.debugDescription)")
            return
        }
        #expect(error.code == .invalidRequest)
        #expect(error.code.rawValue == -32600)
    }

    @Test func batchOfNonObjects() throws {
        guard case .batch(let calls) = read("[1,2]") else {
            Issue.record("expected a batch")
            return
        }
        #expect(calls.count == 2)
        for call in calls {
            guard case .invalid(let id, let error) = call else {
                Issue.record("expected an invalid entry, got \(call)")
                continue
            }
            #expect(id == .null)
            #expect(error.code.rawValue == -32600)
        }
    }

    @Test func mixedBatchKeepsOrder() throws {
        let text = #"[{"jsonrpc":"2.0","id":1,"method":"a"},{"jsonrpc":"2.0","method":"b"},{"jsonrpc":"1.0","id":"c","method":"c"},"x"]"#
        guard case .batch(let calls) = read(text) else {
            Issue.record("expected a batch")
            return
        }
        try #require(calls.count == 4)
        guard case .request(let first) = calls[0], case .request(let second) = calls[1],
              case .invalid(let thirdID, let thirdError) = calls[2], case .invalid(let fourthID, _) = calls[3]
        else {
            Issue.record("unexpected shapes: \(calls)")
            return
        }
        #expect(first.method == "a" && first.id == .number("1"))
        #expect(second.method == "b" && second.isNotification)
        #expect(thirdID == .string("c") && thirdError.code.rawValue == -32600)
        #expect(fourthID == .null)
    }

    /// A batch inside a batch is not a request object.
    @Test func nestedBatchEntryIsInvalid() throws {
        guard case .batch(let calls) = read(#"[[{"jsonrpc":"2.0","id":1,"method":"a"}]]"#) else {
            Issue.record("expected a batch")
            return
        }
        try #require(calls.count == 1)
        guard case .invalid(let id, _) = calls[0] else {
            Issue.record("expected an invalid entry")
            return
        }
        #expect(id == .null)
    }

    // MARK: Parse errors

    @Test(arguments: [
        #"{"jsonrpc":"2.0","id":1,"method":"m""#, "", "{", #"{"jsonrpc":"2.0",}"#, "[1,]", "nul",
        #"{"jsonrpc":"2.0","id":01,"method":"m"}"#,
    ])
    func malformedJSONIsAParseError(_ text: String) {
        #expect(failureCode(Array(text.utf8)) == -32700, "\(text.debugDescription)")
    }

    @Test(arguments: [
        [0xFF],
        Array(#"{"jsonrpc":"2.0","id":1,"method":""#.utf8) + [0xC3] + Array(#""}"#.utf8),  // truncated sequence
        Array(#"{"jsonrpc":"2.0","id":1,"method":""#.utf8) + [0xED, 0xA0, 0x80] + Array(#""}"#.utf8),  // surrogate
        Array(#"{"jsonrpc":"2.0","id":1,"method":""#.utf8) + [0xC0, 0x80] + Array(#""}"#.utf8),  // overlong NUL
        Array(#"{"jsonrpc":"2.0","id":1,"method":"m"}"#.utf8) + [0xFE],  // after the value
    ] as [[UInt8]])
    func invalidUTF8IsAParseError(_ bytes: [UInt8]) {
        #expect(failureCode(bytes) == -32700)
    }

    // MARK: Ids echoed exactly

    @Test(arguments: ["1.0e+3", "18446744073709551616", "-0", "1E400", "-12.50", "0"])
    func numericIDsKeepTheirLexeme(_ lexeme: String) throws {
        let r = try request(#"{"jsonrpc":"2.0","id":\#(lexeme),"method":"m"}"#)
        #expect(r.id == .number(lexeme))
        // The response carries the id byte for byte.
        let response = String(decoding: JSONWriter.encode(ResponseWriter.success(id: try #require(r.id), result: .null)), as: UTF8.self)
        #expect(response.contains(#""id":\#(lexeme),"#) || response.contains(#""id":\#(lexeme)}"#), "\(response)")
    }

    @Test func numericIDOfAnInvalidCallKeepsItsLexeme() throws {
        try expectInvalid(#"{"jsonrpc":"2.0","id":1.0e+3,"method":"m","params":"p"}"#, id: .number("1.0e+3"))
    }

    @Test func stringIDsAreDecodedAndReencodedFaithfully() throws {
        let r = try request(#"{"jsonrpc":"2.0","id":"a\"b\\c\u00e9\ud83d\ude00/\n é","method":"m"}"#)
        #expect(r.id == .string("a\"b\\cé😀/\n é"))
        let response = try JSONReader.parse(JSONWriter.encode(ResponseWriter.failure(id: try #require(r.id), error: RPCError(.invalidRequest, "x"))))
        #expect(response["id"] == r.id)
        #expect(response["error"]?["code"] == .number("-32600"))
    }

    /// With repeated members, the last one counts (as `JSONValue`'s subscript documents).
    @Test func duplicateMembersLastWins() throws {
        let r = try request(#"{"jsonrpc":"2.0","id":1,"id":2,"method":"a","method":"b"}"#)
        #expect(r.id == .number("2"))
        #expect(r.method == "b")
    }
}
