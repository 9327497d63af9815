import Foundation
import Testing
@testable import JSONRPC

/// Where the JSONTestSuite parsing corpus (github.com/nst/JSONTestSuite, `test_parsing/`) is.
///
/// `JSON_TEST_SUITE_DIR` wins when set; otherwise the corpus is looked for at
/// `<repo>/../shared/JSONTestSuite/test_parsing`, where CI places `shared/` next to the clone.
/// The repository root is three levels above this file (`Tests/JSONRPCTests/<file>`).
enum JSONTestSuiteCorpus {
    static let directory: String = {
        if let override = ProcessInfo.processInfo.environment["JSON_TEST_SUITE_DIR"], !override.isEmpty {
            return override
        }
        let repoRoot = URL(fileURLWithPath: #filePath)
            .deletingLastPathComponent()  // JSONRPCTests
            .deletingLastPathComponent()  // Tests
            .deletingLastPathComponent()  // repository root
        return repoRoot.appendingPathComponent("../shared/JSONTestSuite/test_parsing").standardizedFileURL.path
    }()

    /// Every `*.json` file name in the corpus, sorted; empty when the directory is missing.
    static let fileNames: [String] = {
        let names = (try? FileManager.default.contentsOfDirectory(atPath: directory)) ?? []
        return names.filter { $0.hasSuffix(".json") }.sorted()
    }()

    static func names(prefix: String) -> [String] { fileNames.filter { $0.hasPrefix(prefix) } }

    static func bytes(of name: String) throws -> [UInt8] {
        let path = directory + "/" + name
        let data = try #require(FileManager.default.contents(atPath: path), "cannot read \(path)")
        return [UInt8](data)
    }
}

/// Conformance against JSONTestSuite: `y_` must be accepted, `n_` rejected, `i_` either
/// (but without crashing or hanging). One test case per file, so a failure names its file.
@Suite("JSONTestSuite conformance", .timeLimit(.minutes(2)))
struct JSONTestSuiteTests {
    /// Guards against a vacuous run: a wrong path would otherwise give zero parameterized cases.
    @Test func corpusIsPresentAndLarge() throws {
        let directory = JSONTestSuiteCorpus.directory
        var isDirectory: ObjCBool = false
        let exists = FileManager.default.fileExists(atPath: directory, isDirectory: &isDirectory)
        try #require(
            exists && isDirectory.boolValue,
            """
            JSONTestSuite corpus not found at \(directory). Place JSONTestSuite's test_parsing \
            directory at <repo>/../shared/JSONTestSuite/test_parsing or set JSON_TEST_SUITE_DIR.
            """)
        let all = JSONTestSuiteCorpus.fileNames
        #expect(all.count > 300, "only \(all.count) corpus files in \(directory); expected the full suite (~318)")
        #expect(JSONTestSuiteCorpus.names(prefix: "y_").count > 80)
        #expect(JSONTestSuiteCorpus.names(prefix: "n_").count > 150)
        #expect(JSONTestSuiteCorpus.names(prefix: "i_").count > 20)
    }

    @Test("y_ files are accepted", arguments: JSONTestSuiteCorpus.names(prefix: "y_"))
    func acceptsValid(_ name: String) throws {
        let bytes = try JSONTestSuiteCorpus.bytes(of: name)
        let value: JSONValue
        do {
            value = try JSONReader.parse(bytes)
        } catch {
            Issue.record("\(name) must be accepted but was rejected: \(error)")
            return
        }
        // The compact re-encoding of an accepted document must read back to the same value.
        let reencoded = JSONWriter.encode(value)
        #expect(try JSONReader.parse(reencoded) == value, "\(name) does not survive encode/parse")
        // The buffer overload and the array overload must agree.
        let viaBuffer = try bytes.withUnsafeBufferPointer { buffer throws(JSONParseError) in try JSONReader.parse(buffer) }
        #expect(viaBuffer == value)
    }

    @Test("n_ files are rejected", arguments: JSONTestSuiteCorpus.names(prefix: "n_"))
    func rejectsInvalid(_ name: String) throws {
        let bytes = try JSONTestSuiteCorpus.bytes(of: name)
        do {
            let value = try JSONReader.parse(bytes)
            Issue.record("\(name) must be rejected but was accepted as \(JSONWriter.string(value))")
        } catch {
            // The reported offset must point into (or just past) the input.
            #expect((0...bytes.count).contains(error.offset), "\(name): offset \(error.offset) outside 0...\(bytes.count)")
            #expect(!error.reason.isEmpty)
        }
    }

    @Test("i_ files are accepted or rejected, without crashing", arguments: JSONTestSuiteCorpus.names(prefix: "i_"))
    func handlesImplementationDefined(_ name: String) throws {
        let bytes = try JSONTestSuiteCorpus.bytes(of: name)
        do {
            let value = try JSONReader.parse(bytes)
            // When accepted, it must at least round-trip like any other document.
            #expect(try JSONReader.parse(JSONWriter.encode(value)) == value, "\(name) does not survive encode/parse")
        } catch {
            #expect((0...bytes.count).contains(error.offset), "\(name): offset \(error.offset) outside 0...\(bytes.count)")
        }
    }

    /// The reader documents a strict policy for the implementation-defined text-encoding
    /// cases: only well-formed UTF-8 is accepted and lone surrogate escapes are rejected
    /// (a JSON-RPC message must be UTF-8 text). The i_ files about encodings must therefore
    /// all be rejected.
    @Test func implementationDefinedEncodingCasesFollowDocumentedStrictPolicy() throws {
        let encodingCases = JSONTestSuiteCorpus.names(prefix: "i_string_") + JSONTestSuiteCorpus.names(prefix: "i_object_key_")
        try #require(encodingCases.count > 15, "expected the i_string_* encoding cases in the corpus")
        for name in encodingCases {
            let bytes = try JSONTestSuiteCorpus.bytes(of: name)
            if let value = try? JSONReader.parse(bytes) {
                Issue.record("\(name) accepted as \(JSONWriter.string(value)); the reader documents rejecting invalid UTF-8 and lone surrogates")
            }
        }
    }
}
