import Testing
@testable import JSONRPC

@Suite("JSONWriter exact output")
struct JSONWriterTests {
    private func encoded(_ value: JSONValue) -> String { String(decoding: JSONWriter.encode(value), as: UTF8.self) }

    @Test func slashIsNotEscaped() {
        #expect(encoded(.string("a/b")) == #""a/b""#)
        #expect(encoded(.string("</script>")) == #""</script>""#)
    }

    @Test func quoteAndBackslashAreEscaped() {
        #expect(encoded(.string(#"say "hi" \ bye"#)) == #""say \"hi\" \\ bye""#)
        // A backslash followed by a slash: the backslash is escaped, the slash is not.
        #expect(encoded(.string(#"\/"#)) == #""\\/""#)
    }

    @Test func shortEscapes() {
        #expect(encoded(.string("\n\r\t\u{08}\u{0C}")) == #""\n\r\t\b\f""#)
    }

    @Test func otherControlsUseLowerCaseUnicodeEscapes() {
        #expect(encoded(.string("\u{01}")) == #""\u0001""#)
        #expect(encoded(.string("\u{00}")) == #""\u0000""#)
        #expect(encoded(.string("\u{0B}")) == #""\u000b""#)
        #expect(encoded(.string("\u{1B}[0m")) == #""\u001b[0m""#)
        #expect(encoded(.string("\u{1F}")) == #""\u001f""#)
    }

    /// Every byte below 0x20, checked against an escape computed here from the RFC's table.
    @Test(arguments: UInt8(0x00)...UInt8(0x1F))
    func everyControlCharacter(_ byte: UInt8) throws {
        let short: [UInt8: String] = [0x08: #"\b"#, 0x09: #"\t"#, 0x0A: #"\n"#, 0x0C: #"\f"#, 0x0D: #"\r"#]
        let hexDigits = Array("0123456789abcdef")
        let expectedEscape = short[byte] ?? "\\u00" + String(hexDigits[Int(byte >> 4)]) + String(hexDigits[Int(byte & 0xF)])
        let value = JSONValue.string("x" + String(Unicode.Scalar(byte)) + "y")
        #expect(encoded(value) == "\"x" + expectedEscape + "y\"")
        #expect(try JSONReader.parse(JSONWriter.encode(value)) == value)
    }

    @Test func printableASCIIPassesThrough() {
        var all = ""
        for code in 0x20...0x7E where code != 0x22 && code != 0x5C { all.unicodeScalars.append(Unicode.Scalar(UInt8(code))) }
        #expect(encoded(.string(all)) == "\"" + all + "\"")
    }

    @Test func nonASCIIIsRawUTF8() {
        let bytes = JSONWriter.encode(.string("é€😀\u{10FFFF}"))
        #expect(bytes == [0x22, 0xC3, 0xA9, 0xE2, 0x82, 0xAC, 0xF0, 0x9F, 0x98, 0x80, 0xF4, 0x8F, 0xBF, 0xBF, 0x22])
        #expect(!bytes.contains(UInt8(ascii: "\\")))
    }

    @Test func memberOrderIsPreserved() {
        let object = JSONObject([(key: "z", value: 1), (key: "a", value: 2), (key: "m", value: 3)])
        #expect(encoded(.object(object)) == #"{"z":1,"a":2,"m":3}"#)
        let literal: JSONValue = ["zeta": true, "alpha": nil, "mid": "x"]
        #expect(encoded(literal) == #"{"zeta":true,"alpha":null,"mid":"x"}"#)
        // Duplicate keys are written as stored, in order.
        let duplicates = JSONObject([(key: "k", value: 1), (key: "j", value: 2), (key: "k", value: 3)])
        #expect(encoded(.object(duplicates)) == #"{"k":1,"j":2,"k":3}"#)
    }

    @Test(arguments: ["1E+2", "-0.0", "-0", "123456789012345678901234567890", "1.0e-7", "1e400", "18446744073709551616", "0.10"])
    func numberLexemesAreKeptByteForByte(_ lexeme: String) throws {
        #expect(JSONWriter.encode(.number(lexeme)) == Array(lexeme.utf8))
        #expect(encoded(.array([.number(lexeme)])) == "[" + lexeme + "]")
        // And a read lexeme is written back unchanged.
        #expect(JSONWriter.encode(try JSONReader.parse(lexeme)) == Array(lexeme.utf8))
    }

    @Test func compactStructures() {
        #expect(encoded([nil, true, false, [], [:], 0, ""]) == #"[null,true,false,[],{},0,""]"#)
        #expect(encoded(["a": [["b": [1, 2]]], "": ""]) == #"{"a":[{"b":[1,2]}],"":""}"#)
    }

    @Test func keysAreEscapedLikeStrings() {
        let object = JSONObject([(key: "a\"b\n/\u{01}é", value: .null)])
        #expect(encoded(.object(object)) == #"{"a\"b\n/\u0001é":null}"#)
    }

    @Test func stringAndWriteAgreeWithEncode() {
        let value: JSONValue = ["id": .number("7"), "text": "é\n"]
        #expect(JSONWriter.string(value) == #"{"id":7,"text":"é\n"}"#)
        var buffer = Array("prefix:".utf8)
        JSONWriter.write(value, into: &buffer)
        #expect(buffer == Array("prefix:".utf8) + JSONWriter.encode(value))
        var keyBuffer: [UInt8] = []
        JSONWriter.writeString("a\tb", into: &keyBuffer)
        #expect(keyBuffer == Array(#""a\tb""#.utf8))
    }

    /// One message is one line: whatever the value, the output holds no newline byte.
    @Test func outputNeverContainsANewline() {
        let value: JSONValue = ["a\nb": ["\r\n", "\u{2028}", .number("1")], "c": "\n"]
        let bytes = JSONWriter.encode(value)
        #expect(!bytes.contains(0x0A))
        #expect(!bytes.contains(0x0D))
    }
}
