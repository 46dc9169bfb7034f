use super::*;

/// A typical chunk of an OpenAI stream (as the mock upstream sends it).
const SAMPLE: &[u8] = br#"{"id":"chatcmpl-mock43ee6b0bcc4700000001","object":"chat.completion.chunk","created":1795935306,"model":"gpt-4o-mini","system_fingerprint":null,"choices":[{"index":0,"delta":{"content":" is"},"logprobs":null,"finish_reason":null}]}"#;

/// Instructions per chunk parse, counted by callgrind: run the release test binary twice with
/// two counts and take the difference, e.g.
/// `CHUNK_PARSES=1000 valgrind --tool=callgrind $BIN --ignored --exact sse::openai::tests::chunk_parse_cost`
#[test]
#[ignore = "a callgrind measurement, not a test"]
fn chunk_parse_cost() {
    let n: usize = std::env::var("CHUNK_PARSES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000);
    for _ in 0..n {
        let chunk = crate::json::from_bytes::<Chunk<'_>>(std::hint::black_box(SAMPLE));
        std::hint::black_box(chunk);
    }
}
