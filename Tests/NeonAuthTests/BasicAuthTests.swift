import Foundation
import Testing
import JSONRPC
@testable import NeonAuth

@Suite("API v2 signing")
struct BasicAuthTests {
    /// Decodes the header back to the exact bytes, independently of the encoder used.
    func decoded(_ header: String) throws -> [UInt8] {
        #expect(header.hasPrefix("Basic "))
        let data = try #require(Data(base64Encoded: String(header.dropFirst(6))))
        return [UInt8](data)
    }

    @Test("known vector: RFC 7617's Aladdin example")
    func knownVector() {
        let header = BasicAuth.authorization(for: Credential(orgId: "Aladdin", apiKey: Secret("open sesame")))
        #expect(header == "Basic QWxhZGRpbjpvcGVuIHNlc2FtZQ==")
    }

    @Test("keys with special characters round-trip their exact bytes",
          arguments: ["a:b:c", "user@host", "100%", "+/=", "clé-ünïcødé-🔑", "   inner space   x", "0123456789abcdef0123456789abcdef"])
    func specialCharacters(key: String) throws {
        let header = BasicAuth.authorization(for: Credential(orgId: "acme", apiKey: Secret(key)))
        #expect(try decoded(header) == Array("acme:\(key)".utf8))
    }

    @Test("the org ID is the user name and the key the password (split at the first colon)")
    func orgIsUserName() throws {
        let bytes = try decoded(BasicAuth.authorization(for: Credential(orgId: "org1", apiKey: Secret("k:with:colons"))))
        let text = String(decoding: bytes, as: UTF8.self)
        let colon = try #require(text.firstIndex(of: ":"))
        #expect(text[..<colon] == "org1")
        #expect(text[text.index(after: colon)...] == "k:with:colons")
    }

    @Test("sign returns the header, the pinned version and the v2 base URL")
    func signResult() throws {
        let service = makeTestService(v1: "https://v1.example", v2: "https://v2.example/v2", apiVersion: "2.9")
        let result = try service.sign(["orgId": "acme", "apiKey": "k"])
        let expected = "Basic " + Data("acme:k".utf8).base64EncodedString()
        #expect(result["authorization"] == .string(expected))
        #expect(result["headers"]?["Authorization"] == .string(expected))
        #expect(result["headers"]?["NEON-API-VERSION"] == "2.9")
        #expect(result["baseUrl"] == "https://v2.example/v2")
        let explicit = try service.sign(["orgId": "acme", "apiKey": "k", "apiVersion": "2.1"])
        #expect(explicit["headers"]?["NEON-API-VERSION"] == "2.1")
    }

    @Test("an unknown member is refused without echoing its name (a pasted key could be there)")
    func unknownMember() {
        let service = makeTestService(v1: "https://v1", v2: "https://v2", apiVersion: "2.11")
        #expect(throws: RPCError(.invalidParams, "Invalid params: unknown member (known members: apiKey, apiVersion, orgId, profile)")) {
            try service.sign(["orgId": "acme", "apiKey": "k", "SECRETKEY": "x"])
        }
    }

    @Test("invalid params name the field and never echo the value",
          arguments: [
            (["apiKey": "SECRETKEY"], "orgId"),
            (["orgId": "a:b", "apiKey": "SECRETKEY"], "orgId"),
            (["orgId": "", "apiKey": "SECRETKEY"], "orgId"),
            (["orgId": "acme\n", "apiKey": "SECRETKEY"], "orgId"),
            (["orgId": "acme"], "apiKey"),
            (["orgId": "acme", "apiKey": ""], "apiKey"),
            (["orgId": "acme", "apiKey": "SECRETKEY\r\n"], "apiKey"),
            (["orgId": "acme", "apiKey": "SECRETKEY\u{0}"], "apiKey"),
            (["orgId": "acme", "apiKey": " SECRETKEY"], "apiKey"),
            (["orgId": "acme", "apiKey": 42], "apiKey"),
            (["orgId": "acme", "apiKey": "SECRETKEY", "apiVersion": "3.0"], "apiVersion"),
            (["orgId": "acme", "apiKey": "SECRETKEY", "profile": "p"], "profile"),
          ] as [(JSONValue, String)])
    func invalidParams(params: JSONValue, field: String) {
        let service = makeTestService(v1: "https://v1", v2: "https://v2", apiVersion: "2.11")
        do {
            _ = try service.sign(params)
            Issue.record("expected -32602 for \(field)")
        } catch {
            #expect(error.code == .invalidParams)
            #expect(error.data?["field"] == .string(field))
            let text = JSONWriter.string(error.json)
            #expect(!text.contains("SECRETKEY"))
            #expect(error.message.contains(field))
        }
    }
}
