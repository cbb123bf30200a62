//! The proxy meters exactly, for both APIs, streaming and not, against a real
//! PostgreSQL ledger and the mock LLM upstream; refuses what it must with the
//! API's own error shape; charges nothing for upstream errors.
#![allow(clippy::unwrap_used)]
mod proxy_support;

use proxy_support::*;
use serde_json::{Value, json};
use winston::emulator::llm::count_input_tokens;

fn anthropic_body(stream: bool, output_tokens: u64) -> Value {
    json!({
        "model": SONNET, "max_tokens": 200, "stream": stream,
        "system": "You are a shop assistant.",
        "messages": [{"role": "user", "content": [{"type": "text", "text": "What are your opening hours on Sunday?"}]}],
        "mock": {"output_tokens": output_tokens}
    })
}

fn openai_body(stream: bool, output_tokens: u64, include_usage: Option<bool>) -> Value {
    let mut b = json!({
        "model": KIMI, "max_tokens": 300, "stream": stream,
        "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Say hello to the customer."}],
        "mock": {"output_tokens": output_tokens}
    });
    if let Some(u) = include_usage {
        b["stream_options"] = json!({"include_usage": u});
    }
    b
}

#[tokio::test]
async fn anthropic_is_metered_exactly_streaming_and_not() {
    let h = harness(100_000, test_settings()).await;
    // Non-streaming.
    let body = anthropic_body(false, 37);
    let resp = h.anthropic(&body).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let left = remaining(&resp);
    let charged: i64 = resp.headers()["x-winston-credits-charged"].to_str().unwrap().parse().unwrap();
    let v: Value = resp.json().await.unwrap();
    let input = count_input_tokens(&body) as i64;
    assert_eq!(v["usage"]["input_tokens"], json!(input));
    assert_eq!(v["usage"]["output_tokens"], json!(37));
    let first = (input + 37) * SONNET_X;
    assert_eq!(charged, first, "the charge of this very call");
    assert_eq!(h.balance().await.balance, 100_000 - first);
    assert_eq!(left, 100_000 - first);
    // Streaming: the events arrive in the upstream's shape, billed from message_delta.
    let body = anthropic_body(true, 25);
    let resp = h.anthropic(&body).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert!(resp.headers()["content-type"].to_str().unwrap().starts_with("text/event-stream"));
    let text = resp.text().await.unwrap();
    let events: Vec<&str> = text.lines().filter_map(|l| l.strip_prefix("event: ")).collect();
    assert_eq!(events.first(), Some(&"message_start"));
    assert_eq!(events.last(), Some(&"message_stop"));
    assert_eq!(events.iter().filter(|e| **e == "content_block_delta").count(), 25);
    let second = (input + 25) * SONNET_X;
    let b = h.settled_balance().await;
    assert_eq!((b.balance, b.reserved), (100_000 - first - second, 0));
    assert!(text.contains(&format!(": x-winston-credits-remaining: {}", b.available)), "{text}");
    // What this very call was charged, as its usage record says.
    assert!(text.contains(&format!(": x-winston-credits-charged: {second}\n\n")), "{text}");
    assert_eq!(h.usage().await, (first + second, 2));
}

#[tokio::test]
async fn openai_is_metered_exactly_and_the_injected_usage_chunk_is_hidden() {
    let h = harness(100_000, test_settings()).await;
    let input = count_input_tokens(&openai_body(false, 0, None)) as i64;
    let resp = h.openai(&openai_body(false, 11, None)).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["usage"]["completion_tokens"], json!(11));
    let mut spent = (input + 11) * KIMI_X;
    assert_eq!(h.balance().await.balance, 100_000 - spent);
    // Streaming without include_usage: billed all the same, and the client
    // does not see the usage chunk it did not ask for.
    let text = h.openai(&openai_body(true, 9, None)).send().await.unwrap().text().await.unwrap();
    assert!(text.trim_end().ends_with("data: [DONE]"), "{text}");
    assert!(!text.contains("\"choices\":[]"), "hidden usage chunk leaked: {text}");
    spent += (input + 9) * KIMI_X;
    assert_eq!(h.balance().await.balance, 100_000 - spent);
    // Streaming with include_usage: the client gets its usage chunk.
    let text = h.openai(&openai_body(true, 7, Some(true))).send().await.unwrap().text().await.unwrap();
    assert!(text.contains("\"choices\":[]") && text.contains("\"completion_tokens\":7"), "{text}");
    spent += (input + 7) * KIMI_X;
    let b = h.settled_balance().await;
    assert_eq!((b.balance, b.reserved), (100_000 - spent, 0));
    assert_eq!(h.usage().await, (spent, 3));
}

#[tokio::test]
async fn upstream_errors_are_passed_through_and_not_charged() {
    let h = harness(100_000, test_settings()).await;
    for error in ["429", "529", "500"] {
        let mut body = anthropic_body(false, 5);
        body["mock"]["error"] = json!(error);
        let resp = h.anthropic(&body).send().await.unwrap();
        assert_eq!(resp.status().as_str(), error);
        if error == "429" {
            assert_eq!(resp.headers()["retry-after"], "1");
        }
        assert_eq!(remaining(&resp), 100_000);
        let v: Value = resp.json().await.unwrap();
        assert_eq!(v["type"], "error");
        let mut body = openai_body(true, 5, None);
        body["mock"]["error"] = json!(error);
        assert_eq!(h.openai(&body).send().await.unwrap().status().as_str(), error);
    }
    assert_eq!(h.usage().await, (0, 0), "an upstream error status generated nothing and costs nothing");
    // An error event after HTTP 200 is relayed; what was relayed before it is
    // billed (see tests/proxy_integrity.rs for the amounts).
    let mut body = anthropic_body(true, 10);
    body["mock"]["error"] = json!("midstream");
    let text = h.anthropic(&body).send().await.unwrap().text().await.unwrap();
    assert!(text.contains("event: error"), "{text}");
    let mut body = openai_body(true, 10, None);
    body["mock"]["error"] = json!("midstream");
    let text = h.openai(&body).send().await.unwrap().text().await.unwrap();
    assert!(text.contains("engine_overloaded_error"), "{text}");
    let b = h.settled_balance().await;
    assert_eq!(h.usage().await.1, 2);
    assert_eq!(100_000 - b.balance, h.usage().await.0);
}

#[tokio::test]
async fn bad_input_is_refused_in_each_api_shape_and_not_charged() {
    let h = harness(100_000, test_settings()).await;
    let url = |p: &str| format!("{}{p}", h.url);
    // Missing and wrong keys.
    let r = h.http.post(url("/v1/messages")).json(&anthropic_body(false, 1)).send().await.unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(r.json::<Value>().await.unwrap()["error"]["type"], "authentication_error");
    let r = h
        .http
        .post(url("/v1/chat/completions"))
        .bearer_auth("wsk_nope")
        .json(&openai_body(false, 1, None))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(r.json::<Value>().await.unwrap()["error"]["code"], "invalid_api_key");
    // Malformed JSON.
    let r = h.http.post(url("/v1/messages")).header("x-api-key", &h.key).body("{not json").send().await.unwrap();
    assert_eq!(r.status(), 400);
    assert_eq!(r.json::<Value>().await.unwrap()["error"]["type"], "invalid_request_error");
    // Unknown model, and a model on the other API's endpoint.
    let mut b = openai_body(false, 1, None);
    b["model"] = json!("gpt-nope");
    let r = h.openai(&b).send().await.unwrap();
    assert_eq!(r.status(), 404);
    assert_eq!(r.json::<Value>().await.unwrap()["error"]["code"], "model_not_found");
    let mut b = anthropic_body(false, 1);
    b["model"] = json!(KIMI);
    assert_eq!(h.anthropic(&b).send().await.unwrap().status(), 400);
    // Over the body limit.
    let mut b = anthropic_body(false, 1);
    b["messages"][0]["content"][0]["text"] = json!("x".repeat(100 * 1024));
    let r = h.anthropic(&b).send().await.unwrap();
    assert_eq!(r.status(), 413);
    assert_eq!(r.json::<Value>().await.unwrap()["error"]["type"], "request_too_large");
    assert_eq!(h.balance().await.balance, 100_000);
    assert_eq!(h.usage().await, (0, 0));
    // Models, health, readiness and metrics.
    let r = h.http.get(url("/v1/models")).bearer_auth(&h.key).send().await.unwrap();
    let ids: Vec<String> = r.json::<Value>().await.unwrap()["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(ids, [OPUS, SONNET, TOOLS, KIMI]);
    assert_eq!(h.http.get(url("/healthz")).send().await.unwrap().status(), 200);
    let admin = |p: &str| format!("{}{p}", h.admin_url);
    assert!(eventually(10, || async { h.http.get(admin("/readyz")).send().await.unwrap().status() == 200 }).await);
    let m = h.http.get(admin("/metrics")).send().await.unwrap().text().await.unwrap();
    assert!(m.contains("winston_proxy_requests_total{api=\"anthropic\",outcome=\"too_large\"} 1"), "{m}");
}

#[tokio::test]
async fn low_balance_warns_and_exhaustion_refuses_with_402() {
    let h = harness(2_000, test_settings()).await;
    let body = |tokens: u64| json!({"model": SONNET, "max_tokens": tokens, "messages": [{"role": "user", "content": "hi"}], "mock": {"output_tokens": tokens}});
    let input = count_input_tokens(&body(1)) as i64;
    // 2000 - (1 + 200) x 5 = 995 left: about half, no warning.
    let r = h.anthropic(&body(200)).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let left = 2_000 - (input + 200) * SONNET_X;
    assert_eq!(remaining(&r), left);
    assert!(r.headers().get("x-winston-credits-warning").is_none(), "not low yet");
    // Another (1 + 120) x 5 = 605: 390 left, under 20 % of 2000.
    let r = h.anthropic(&body(120)).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let left = left - (input + 120) * SONNET_X;
    assert_eq!(remaining(&r), left);
    assert!(left * 100 < 2_000 * 20, "test setup: {left} should be under 20 %");
    let warning = r.headers()["x-winston-credits-warning"].to_str().unwrap().to_string();
    assert!(warning.contains("20%"), "{warning}");
    // The rest cannot cover 200 output tokens: the cap is lowered to what it pays for.
    let r = h.anthropic(&body(200)).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let cap: i64 = r.headers()["x-winston-output-cap"].to_str().unwrap().parse().unwrap();
    assert!((16..200).contains(&cap), "cap {cap}");
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["usage"]["output_tokens"], json!(cap));
    let left = left - (input + cap) * SONNET_X;
    assert_eq!(h.balance().await.balance, left);
    // Under the input and 16 output tokens: 402 in each shape, saying what is left.
    let r = h.anthropic(&body(200)).send().await.unwrap();
    assert_eq!(r.status(), 402);
    assert_eq!(remaining(&r), left);
    assert!(r.headers().get("x-winston-credits-warning").is_some());
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"]["type"], "billing_error");
    assert!(v["error"]["message"].as_str().unwrap().contains("insufficient credits"));
    let mut b = openai_body(false, 1, None);
    b["model"] = json!(OPUS);
    let r = h.anthropic(&b).send().await.unwrap();
    assert_eq!(r.status(), 402);
    assert_eq!(h.balance().await.balance, left);
}
