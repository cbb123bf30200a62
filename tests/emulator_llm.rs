//! The mock LLM upstream as an honest witness: what its stats say it
//! generated equals what a client reading its responses saw, for both APIs,
//! streamed and not, including the misbehaviours a request can ask for; and
//! it refuses what the real APIs refuse, in their error shapes.
#![allow(clippy::unwrap_used)]
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::net::TcpListener;
use winston::emulator::llm::{Generated, LlmMockConfig, MockStats, StatsReport, count_input_tokens, serve_with_stats};

struct Mock {
    base: String,
    stats: Arc<MockStats>,
    http: reqwest::Client,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl Drop for Mock {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn mock() -> Mock {
    winston::telemetry::install_crypto_provider();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let (task, stats) = serve_with_stats(listener, LlmMockConfig::default()).await;
    Mock { base, stats, http: reqwest::Client::new(), task }
}

impl Mock {
    fn anthropic(&self, body: &Value) -> reqwest::RequestBuilder {
        self.http.post(format!("{}/anthropic/v1/messages", self.base)).json(body)
    }

    fn openai(&self, body: &Value) -> reqwest::RequestBuilder {
        self.http.post(format!("{}/openai/v1/chat/completions", self.base)).json(body)
    }

    async fn text(&self, api: Api, body: &Value) -> String {
        let req = match api {
            Api::Anthropic => self.anthropic(body),
            Api::OpenAi => self.openai(body),
        };
        let resp = req.send().await.unwrap();
        assert_eq!(resp.status(), 200);
        resp.text().await.unwrap()
    }
}

#[derive(Clone, Copy, Debug)]
enum Api {
    Anthropic,
    OpenAi,
}

fn anthropic_body(tag: &str, stream: bool, max_tokens: u64, mock: Value) -> Value {
    let mut mock = mock;
    mock["tag"] = json!(tag);
    json!({"model": "claude-sonnet-4-5", "max_tokens": max_tokens, "stream": stream,
           "messages": [{"role": "user", "content": format!("a question for {tag}")}], "mock": mock})
}

fn openai_body(tag: &str, stream: bool, mock: Value) -> Value {
    let mut mock = mock;
    mock["tag"] = json!(tag);
    json!({"model": "kimi-k2.6", "stream": stream, "stream_options": {"include_usage": true},
           "messages": [{"role": "user", "content": format!("a question for {tag}")}], "mock": mock})
}

/// Server-sent events as (event name, data) pairs; `[DONE]` has data `"[DONE]"`.
fn sse(text: &str) -> Vec<(String, Value)> {
    text.split("\n\n")
        .filter(|f| !f.trim().is_empty())
        .map(|f| {
            let mut event = String::new();
            let mut data = Value::Null;
            for line in f.lines() {
                if let Some(e) = line.strip_prefix("event: ") {
                    event = e.to_string();
                } else if let Some(d) = line.strip_prefix("data: ") {
                    data = serde_json::from_str(d).unwrap_or_else(|_| json!(d));
                }
            }
            (event, data)
        })
        .collect()
}

/// What a client saw in an Anthropic stream: delta frames, words, the usage
/// of `message_start` and `message_delta` (merged), and the event names.
struct AnthropicStream {
    deltas: u64,
    words: u64,
    usage: Value,
    events: Vec<String>,
}

fn read_anthropic_stream(text: &str) -> AnthropicStream {
    let mut out = AnthropicStream { deltas: 0, words: 0, usage: json!({}), events: vec![] };
    for (event, data) in sse(text) {
        match event.as_str() {
            "content_block_delta" => {
                out.deltas += 1;
                out.words += data["delta"]["text"].as_str().unwrap().split_whitespace().count() as u64;
            }
            "message_start" => out.usage = data["message"]["usage"].clone(),
            "message_delta" => {
                if let Some(u) = data["usage"].as_object() {
                    for (k, v) in u {
                        out.usage[k] = v.clone();
                    }
                }
            }
            _ => {}
        }
        out.events.push(event);
    }
    out
}

/// What a client saw in an OpenAI stream: words per choice index, the usage
/// chunk, whether `[DONE]` came, and any error chunk.
struct OpenAiStream {
    words: Vec<u64>,
    deltas: u64,
    usage: Option<Value>,
    done: bool,
    error: Option<Value>,
}

fn read_openai_stream(text: &str) -> OpenAiStream {
    let mut out = OpenAiStream { words: vec![], deltas: 0, usage: None, done: false, error: None };
    for (_, data) in sse(text) {
        if data == "[DONE]" {
            out.done = true;
            continue;
        }
        if data.get("error").is_some() {
            out.error = Some(data);
            continue;
        }
        if data["usage"].is_object() {
            out.usage = Some(data["usage"].clone());
        }
        for choice in data["choices"].as_array().unwrap() {
            let index = choice["index"].as_u64().unwrap() as usize;
            if out.words.len() <= index {
                out.words.resize(index + 1, 0);
            }
            if let Some(content) = choice["delta"]["content"].as_str().filter(|c| !c.is_empty()) {
                out.deltas += 1;
                out.words[index] += content.split_whitespace().count() as u64;
            }
        }
    }
    out
}

fn words(text: &str) -> u64 {
    text.split_whitespace().count() as u64
}

#[tokio::test]
async fn anthropic_stats_equal_what_the_client_read() {
    let m = mock().await;
    let mut expected_total = 0;
    for (tag, stream, max_tokens, wanted) in
        [("a", false, 100, 7), ("a", true, 100, 9), ("b", true, 5, 30), ("b", false, 4, 30), ("c", true, 50, 0)]
    {
        let body = anthropic_body(tag, stream, max_tokens, json!({"output_tokens": wanted}));
        let text = m.text(Api::Anthropic, &body).await;
        let (seen, usage) = if stream {
            let s = read_anthropic_stream(&text);
            assert_eq!(s.deltas, s.words, "one word per delta frame");
            assert_eq!(s.events.last().unwrap(), "message_stop");
            (s.words, s.usage)
        } else {
            let v: Value = serde_json::from_str(&text).unwrap();
            (words(v["content"][0]["text"].as_str().unwrap()), v["usage"].clone())
        };
        assert_eq!(seen, wanted.min(max_tokens), "{tag} stream={stream}");
        assert_eq!(usage["output_tokens"], seen, "reported usage equals what was emitted");
        assert_eq!(usage["input_tokens"], count_input_tokens(&body));
        expected_total += seen;
    }
    let a = m.stats.tag("a");
    assert_eq!((a.requests, a.generations, a.output_tokens), (2, 2, 16));
    assert_eq!(a.max_tokens, vec![Some(100), Some(100)]);
    let b = m.stats.tag("b");
    assert_eq!((b.generations, b.output_tokens), (2, 9));
    assert_eq!(b.max_tokens, vec![Some(5), Some(4)]);
    assert_eq!(b.input_tokens, 2 * count_input_tokens(&anthropic_body("b", true, 1, json!({}))));
    let total = m.stats.total();
    assert_eq!((total.generations, total.output_tokens), (5, expected_total));
    assert_eq!(m.stats.tags().keys().collect::<Vec<_>>(), ["a", "b", "c"]);
    assert_eq!(m.stats.tag("never"), Generated::default());
}

#[tokio::test]
async fn openai_stats_equal_what_the_client_read_over_all_choices() {
    let m = mock().await;
    for (tag, stream, cap, n, wanted) in [
        ("a", false, None, None, 6),
        ("a", true, Some(4), None, 10),
        ("n", false, Some(5), Some(3), 8),
        ("n", true, Some(5), Some(3), 8),
    ] {
        let mut body = openai_body(tag, stream, json!({"output_tokens": wanted}));
        if let Some(cap) = cap {
            body["max_completion_tokens"] = json!(cap);
        }
        if let Some(n) = n {
            body["n"] = json!(n);
        }
        let text = m.text(Api::OpenAi, &body).await;
        let per_choice = cap.map_or(wanted, |c: u64| wanted.min(c));
        let choices = n.unwrap_or(1);
        let (seen, usage) = if stream {
            let s = read_openai_stream(&text);
            assert!(s.done && s.error.is_none());
            assert_eq!(s.words, vec![per_choice; choices], "each index gets its own deltas");
            assert_eq!(s.deltas, per_choice * choices as u64);
            (s.words.iter().sum::<u64>(), s.usage.unwrap())
        } else {
            let v: Value = serde_json::from_str(&text).unwrap();
            let cs = v["choices"].as_array().unwrap();
            assert_eq!(cs.len(), choices);
            for (i, c) in cs.iter().enumerate() {
                assert_eq!(c["index"], i);
                assert_eq!(words(c["message"]["content"].as_str().unwrap()), per_choice);
                assert_eq!(c["finish_reason"], if per_choice < wanted { "length" } else { "stop" });
            }
            (cs.iter().map(|c| words(c["message"]["content"].as_str().unwrap())).sum(), v["usage"].clone())
        };
        assert_eq!(usage["completion_tokens"], seen, "completion_tokens is the total over choices");
        assert_eq!(usage["prompt_tokens"], count_input_tokens(&body));
        assert_eq!(usage["total_tokens"], seen + count_input_tokens(&body));
    }
    let a = m.stats.tag("a");
    assert_eq!((a.generations, a.output_tokens, a.web_search_requests), (2, 6 + 4, 0));
    assert_eq!(a.max_tokens, vec![None, Some(4)]);
    let n = m.stats.tag("n");
    assert_eq!((n.generations, n.output_tokens), (2, 2 * 3 * 5));
    assert_eq!(m.stats.total().output_tokens, 10 + 30);
}

#[tokio::test]
async fn ignore_max_tokens_generates_past_the_cap_and_reports_it() {
    let m = mock().await;
    let ask = json!({"output_tokens": 40, "ignore_max_tokens": true});
    let s = read_anthropic_stream(&m.text(Api::Anthropic, &anthropic_body("as", true, 10, ask.clone())).await);
    assert_eq!((s.words, s.usage["output_tokens"].as_u64()), (40, Some(40)));
    let v: Value =
        serde_json::from_str(&m.text(Api::Anthropic, &anthropic_body("an", false, 10, ask.clone())).await).unwrap();
    assert_eq!(
        (words(v["content"][0]["text"].as_str().unwrap()), v["usage"]["output_tokens"].as_u64()),
        (40, Some(40))
    );
    let mut body = openai_body("os", true, ask.clone());
    body["max_tokens"] = json!(10);
    body["n"] = json!(2);
    let s = read_openai_stream(&m.text(Api::OpenAi, &body).await);
    assert_eq!((s.words, s.usage.unwrap()["completion_tokens"].as_u64()), (vec![40, 40], Some(80)));
    for (tag, out) in [("as", 40), ("an", 40), ("os", 80)] {
        let g = m.stats.tag(tag);
        assert_eq!(g.output_tokens, out, "{tag}");
        assert_eq!(g.max_tokens, vec![Some(10)], "{tag}: the cap the mock received");
    }
    // Without the flag the same request stops at the cap.
    let s = read_anthropic_stream(
        &m.text(Api::Anthropic, &anthropic_body("capped", true, 10, json!({"output_tokens": 40}))).await,
    );
    assert_eq!(s.words, 10);
}

#[tokio::test]
async fn omit_usage_drops_every_usage_report_but_the_stats_still_count() {
    let m = mock().await;
    let ask = json!({"output_tokens": 12, "omit_usage": true});
    let v: Value =
        serde_json::from_str(&m.text(Api::Anthropic, &anthropic_body("t", false, 100, ask.clone())).await).unwrap();
    assert!(v.get("usage").is_none(), "{v}");
    let text = m.text(Api::Anthropic, &anthropic_body("t", true, 100, ask.clone())).await;
    let delta = sse(&text).into_iter().find(|(e, _)| e == "message_delta").unwrap().1;
    assert!(delta.get("usage").is_none(), "{delta}");
    assert_eq!(read_anthropic_stream(&text).words, 12);
    let v: Value = serde_json::from_str(&m.text(Api::OpenAi, &openai_body("t", false, ask.clone())).await).unwrap();
    assert!(v.get("usage").is_none(), "{v}");
    let s = read_openai_stream(&m.text(Api::OpenAi, &openai_body("t", true, ask.clone())).await);
    assert!(s.usage.is_none() && s.done, "no usage chunk although include_usage was asked");
    assert_eq!(s.words, vec![12]);
    let g = m.stats.tag("t");
    assert_eq!((g.generations, g.usage_omitted, g.output_tokens), (4, 4, 48));
    // Header form.
    let resp = m
        .http
        .post(format!("{}/openai/v1/chat/completions", m.base))
        .header("x-mock-omit-usage", "true")
        .header("x-mock-tag", "h")
        .json(&json!({"model": "kimi-k2.6", "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .unwrap();
    assert!(resp.json::<Value>().await.unwrap().get("usage").is_none());
    assert_eq!(m.stats.tag("h").usage_omitted, 1);
}

#[tokio::test]
async fn a_cut_stream_ends_cleanly_after_half_the_tokens_with_no_end_event() {
    let m = mock().await;
    let ask = json!({"output_tokens": 21, "error": "cut"});
    let s = read_anthropic_stream(&m.text(Api::Anthropic, &anthropic_body("a", true, 100, ask.clone())).await);
    assert_eq!(s.words, 10);
    assert_eq!(s.events.last().unwrap(), "content_block_delta", "no stop, no error: {:?}", s.events);
    assert!(!s.events.iter().any(|e| e == "message_stop" || e == "error" || e == "message_delta"));
    let mut body = openai_body("o", true, ask.clone());
    body["n"] = json!(2);
    let s = read_openai_stream(&m.text(Api::OpenAi, &body).await);
    assert!(!s.done && s.error.is_none() && s.usage.is_none());
    assert_eq!(s.words, vec![10, 10]);
    let (a, o) = (m.stats.tag("a"), m.stats.tag("o"));
    assert_eq!((a.output_tokens, a.interrupted), (10, 1));
    assert_eq!((o.output_tokens, o.interrupted), (20, 1));
}

/// Reads a response body until it ends or fails; whether it failed.
async fn read_until_broken(resp: reqwest::Response) -> (Vec<u8>, bool) {
    let mut resp = resp;
    let mut bytes = Vec::new();
    loop {
        match resp.chunk().await {
            Ok(Some(c)) => bytes.extend_from_slice(&c),
            Ok(None) => return (bytes, false),
            Err(_) => return (bytes, true),
        }
    }
}

/// Complete output words (`w<digits>` followed by a space) in a possibly
/// truncated body.
fn whole_words(body: &[u8]) -> u64 {
    let text = String::from_utf8_lossy(body);
    let pieces: Vec<&str> = text.split(' ').collect();
    // Every piece but the last was followed by a space.
    pieces[..pieces.len() - 1]
        .iter()
        .map(|p| p.rsplit('"').next().unwrap())
        .filter(|w| w.len() > 1 && w.starts_with('w') && w[1..].bytes().all(|b| b.is_ascii_digit()))
        .count() as u64
}

#[tokio::test]
async fn a_cut_body_is_truncated_and_only_the_words_sent_count() {
    let m = mock().await;
    let ask = json!({"output_tokens": 200, "error": "cut"});
    let resp = m.anthropic(&anthropic_body("a", false, 1000, ask.clone())).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let full = resp.content_length().unwrap();
    let (body, broken) = read_until_broken(resp).await;
    assert!(broken, "the client must notice the body was cut");
    assert_eq!(body.len() as u64, full / 2);
    assert!(serde_json::from_slice::<Value>(&body).is_err());
    let seen = whole_words(&body);
    assert!(seen > 0 && seen < 200, "{seen}");
    assert_eq!(m.stats.tag("a").output_tokens, seen);
    let mut body = openai_body("o", false, ask);
    body["n"] = json!(3);
    let (bytes, broken) = read_until_broken(m.openai(&body).send().await.unwrap()).await;
    assert!(broken);
    let seen = whole_words(&bytes);
    assert!(seen > 200 && seen < 600, "{seen}");
    assert_eq!(m.stats.tag("o").output_tokens, seen);
    assert_eq!(m.stats.tag("o").interrupted, 1);
}

#[tokio::test]
async fn a_midstream_error_counts_the_tokens_emitted_before_it() {
    let m = mock().await;
    let ask = json!({"output_tokens": 30, "error": "midstream"});
    let s = read_anthropic_stream(&m.text(Api::Anthropic, &anthropic_body("a", true, 100, ask.clone())).await);
    assert_eq!(s.events.last().unwrap(), "error");
    assert_eq!(s.words, 15);
    let s = read_openai_stream(&m.text(Api::OpenAi, &openai_body("o", true, ask.clone())).await);
    let error = s.error.unwrap();
    assert_eq!(error["error"]["type"], "engine_overloaded_error");
    assert!(!s.done);
    assert_eq!(s.words, vec![15]);
    assert_eq!((m.stats.tag("a").output_tokens, m.stats.tag("a").interrupted), (15, 1));
    assert_eq!(m.stats.tag("o").output_tokens, 15);
}

#[tokio::test]
async fn cache_tokens_and_web_searches_are_reported_in_each_api_shape() {
    let m = mock().await;
    let ask = json!({"output_tokens": 3, "cache_creation_input_tokens": 100, "cache_read_input_tokens": 250, "web_search_requests": 2});
    let body = anthropic_body("a", false, 100, ask.clone());
    let input = count_input_tokens(&body);
    let v: Value = serde_json::from_str(&m.text(Api::Anthropic, &body).await).unwrap();
    let u = &v["usage"];
    assert_eq!(u["input_tokens"], input, "Anthropic input_tokens excludes the cache");
    assert_eq!(
        (u["cache_creation_input_tokens"].as_u64(), u["cache_read_input_tokens"].as_u64()),
        (Some(100), Some(250))
    );
    assert_eq!(u["server_tool_use"]["web_search_requests"], 2);
    let s = read_anthropic_stream(&m.text(Api::Anthropic, &anthropic_body("a", true, 100, ask.clone())).await);
    assert_eq!(
        (s.usage["cache_creation_input_tokens"].as_u64(), s.usage["cache_read_input_tokens"].as_u64()),
        (Some(100), Some(250))
    );
    assert_eq!(s.usage["server_tool_use"]["web_search_requests"], 2);
    let body = openai_body("o", false, ask.clone());
    let v: Value = serde_json::from_str(&m.text(Api::OpenAi, &body).await).unwrap();
    let openai_input = count_input_tokens(&body);
    assert_eq!(v["usage"]["prompt_tokens"], openai_input + 350, "OpenAI prompt_tokens includes cached input");
    assert_eq!(v["usage"]["prompt_tokens_details"]["cached_tokens"], 250);
    let s = read_openai_stream(&m.text(Api::OpenAi, &openai_body("o", true, ask)).await);
    assert_eq!(s.usage.unwrap()["prompt_tokens_details"]["cached_tokens"], 250);
    let a = m.stats.tag("a");
    assert_eq!(
        (a.input_tokens, a.cache_creation_input_tokens, a.cache_read_input_tokens, a.web_search_requests),
        (2 * input, 200, 500, 4)
    );
    let o = m.stats.tag("o");
    assert_eq!((o.cache_read_input_tokens, o.web_search_requests), (500, 0), "OpenAI has no web search usage");
    // Without the fields the usage reports none, as before.
    let v: Value =
        serde_json::from_str(&m.text(Api::Anthropic, &anthropic_body("plain", false, 100, json!({}))).await).unwrap();
    assert_eq!((v["usage"]["cache_read_input_tokens"].as_u64(), v["usage"].get("server_tool_use")), (Some(0), None));
}

#[tokio::test]
async fn invalid_output_caps_are_refused_as_the_real_apis_refuse_them() {
    let m = mock().await;
    let bad = [json!(-5), json!(12.5), json!("100"), json!(1e30), json!(0), json!(null), json!(100.0)];
    for value in &bad {
        let mut body = anthropic_body("bad", false, 1, json!({}));
        body["max_tokens"] = value.clone();
        let resp = m.anthropic(&body).send().await.unwrap();
        assert_eq!(resp.status(), 400, "max_tokens {value}");
        let header = resp.headers()["request-id"].to_str().unwrap().to_string();
        let v: Value = resp.json().await.unwrap();
        assert_eq!(v["type"], "error");
        assert_eq!(v["error"]["type"], "invalid_request_error");
        assert!(v["error"]["message"].as_str().unwrap().contains("max_tokens"), "{v}");
        assert_eq!(v["request_id"], header, "body and header carry the same request id");
        for field in ["max_tokens", "max_completion_tokens"] {
            if value.is_null() {
                continue; // OpenAI accepts an explicit null cap
            }
            let mut body = openai_body("bad", false, json!({}));
            body[field] = value.clone();
            let resp = m.openai(&body).send().await.unwrap();
            assert_eq!(resp.status(), 400, "{field} {value}");
            assert!(resp.headers().contains_key("x-request-id"));
            let e = resp.json::<Value>().await.unwrap()["error"].clone();
            assert_eq!(e["param"], field, "{e}");
            assert_eq!(e["type"], "invalid_request_error");
            assert!(e["message"].is_string() && e["code"].is_string(), "{e}");
        }
    }
    let mut body = anthropic_body("bad", false, 1, json!({}));
    body.as_object_mut().unwrap().remove("max_tokens");
    let v: Value = m.anthropic(&body).send().await.unwrap().json().await.unwrap();
    assert_eq!(v["error"]["message"], "max_tokens: Field required");
    body["max_completion_tokens"] = json!(10);
    assert_eq!(m.anthropic(&body).send().await.unwrap().status(), 400);
    let mut body = openai_body("bad", false, json!({}));
    body["max_tokens"] = json!(10);
    body["max_completion_tokens"] = json!(10);
    let resp = m.openai(&body).send().await.unwrap();
    assert_eq!(resp.status(), 400, "both caps at once");
    assert_eq!(resp.json::<Value>().await.unwrap()["error"]["param"], "max_tokens");
    for n in [json!(0), json!(129), json!(1.5), json!("2")] {
        let mut body = openai_body("bad", false, json!({}));
        body["n"] = n.clone();
        let resp = m.openai(&body).send().await.unwrap();
        assert_eq!(resp.status(), 400, "n {n}");
        assert_eq!(resp.json::<Value>().await.unwrap()["error"]["param"], "n");
    }
    let g = m.stats.tag("bad");
    assert_eq!(g.requests, 7 + 12 + 2 + 1 + 4);
    assert_eq!((g.generations, g.output_tokens, g.max_tokens.len()), (0, 0, 0), "nothing refused was generated");
    // The limits themselves are accepted.
    let mut body = openai_body("ok", false, json!({"output_tokens": 1}));
    body["max_tokens"] = json!(null);
    body["max_completion_tokens"] = json!(1);
    body["n"] = json!(128);
    assert_eq!(m.openai(&body).send().await.unwrap().status(), 200);
    assert_eq!(m.stats.tag("ok").output_tokens, 128);
}

#[tokio::test]
async fn status_errors_carry_the_official_fields_and_generate_nothing() {
    let m = mock().await;
    for error in ["429", "529", "500"] {
        let resp = m.anthropic(&anthropic_body("e", false, 10, json!({"error": error}))).send().await.unwrap();
        assert_eq!(resp.status().as_str(), error);
        let id = resp.headers()["request-id"].to_str().unwrap().to_string();
        if error == "429" {
            assert_eq!(resp.headers()["retry-after"], "1");
        }
        let v: Value = resp.json().await.unwrap();
        assert_eq!((v["type"].as_str(), v["request_id"].as_str()), (Some("error"), Some(id.as_str())));
        let resp = m.openai(&openai_body("e", true, json!({"error": error}))).send().await.unwrap();
        assert_eq!(resp.status().as_str(), error);
        let e = resp.json::<Value>().await.unwrap()["error"].clone();
        for key in ["message", "type", "param", "code"] {
            assert!(e.get(key).is_some(), "OpenAI error lacks {key}: {e}");
        }
    }
    let g = m.stats.tag("e");
    assert_eq!((g.requests, g.generations, g.output_tokens), (6, 0, 0));
    assert_eq!(g.max_tokens.len(), 6, "they passed validation: the cap was received");
    // Request ids differ per request and successes carry one too.
    let a = m.anthropic(&anthropic_body("ok", false, 10, json!({}))).send().await.unwrap();
    let b = m.anthropic(&anthropic_body("ok", false, 10, json!({}))).send().await.unwrap();
    assert_ne!(a.headers()["request-id"], b.headers()["request-id"]);
}

#[tokio::test]
async fn the_stats_endpoint_serves_the_same_snapshot() {
    let m = mock().await;
    m.text(Api::Anthropic, &anthropic_body("x", true, 8, json!({"output_tokens": 5}))).await;
    let mut body = openai_body("", false, json!({"output_tokens": 3}));
    body["mock"].as_object_mut().unwrap().remove("tag");
    let resp = m.openai(&body).header("x-mock-tag", "hdr").send().await.unwrap();
    assert_eq!(resp.status(), 200);
    resp.text().await.unwrap();
    let report: StatsReport = m.http.get(format!("{}/_mock/stats", m.base)).send().await.unwrap().json().await.unwrap();
    assert_eq!(report, m.stats.report());
    assert_eq!(report.total.output_tokens, 8);
    assert_eq!(report.tags["x"].max_tokens, vec![Some(8)]);
    assert_eq!(report.tags["hdr"].output_tokens, 3, "the header names the tag");
}

#[tokio::test]
async fn a_reader_that_goes_away_stops_the_generation() {
    let m = mock().await;
    let body = anthropic_body("gone", true, 10_000, json!({"output_tokens": 5000, "token_delay_ms": 2}));
    let mut resp = m.anthropic(&body).send().await.unwrap();
    let mut read = 0;
    while read < 5 {
        let chunk = resp.chunk().await.unwrap().unwrap();
        read += String::from_utf8_lossy(&chunk).matches("content_block_delta\n").count();
    }
    drop(resp);
    // The count settles once the server notices, far below what was asked.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let mut last = m.stats.tag("gone").output_tokens;
    loop {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let now = m.stats.tag("gone").output_tokens;
        if now == last {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "generation never stopped");
        last = now;
    }
    assert!((5..1000).contains(&last), "{last}");
}

#[tokio::test]
async fn the_emulator_mounts_the_mock_with_its_stats() {
    winston::telemetry::install_crypto_provider();
    let emu = winston::emulator::spawn(winston::emulator::EmulatorConfig::default()).await.unwrap();
    let urls = winston::emulator::base_urls(emu.addr);
    let http = reqwest::Client::new();
    let body = anthropic_body("emu", true, 50, json!({"output_tokens": 6}));
    let text = http
        .post(format!("{}/v1/messages", urls["anthropic"].as_str().unwrap()))
        .json(&body)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(read_anthropic_stream(&text).words, 6);
    assert_eq!(emu.llm_stats.tag("emu").output_tokens, 6);
    let report: StatsReport = http.get(urls["llm_stats"].as_str().unwrap()).send().await.unwrap().json().await.unwrap();
    assert_eq!(report, emu.llm_stats.report());
}
