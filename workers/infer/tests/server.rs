//! The OpenAI-compatible server over real HTTP (a raw HTTP/1.1 client on a TCP socket).
#![allow(clippy::unwrap_used, clippy::arithmetic_side_effects)]

mod common;

use common::{write_checkpoint, Spec};
use magnet_infer::server::{router, ServerConfig};
use magnet_infer::Model;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

struct Reply {
    status: u16,
    headers: String,
    body: String,
}

impl Reply {
    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }
}

fn dechunk(mut raw: &str) -> String {
    let mut out = String::new();
    loop {
        let (size, rest) = raw.split_once("\r\n").unwrap();
        let n = usize::from_str_radix(size.trim(), 16).unwrap();
        if n == 0 {
            return out;
        }
        out.push_str(&rest[..n]);
        raw = &rest[n + 2..];
    }
}

async fn http(addr: std::net::SocketAddr, method: &str, path: &str, body: &str) -> Reply {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).await.unwrap();
    let raw = String::from_utf8(raw).unwrap();
    let (head, body) = raw.split_once("\r\n\r\n").unwrap();
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    let chunked = head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked");
    Reply {
        status,
        headers: head.to_string(),
        body: if chunked {
            dechunk(body)
        } else {
            body.to_string()
        },
    }
}

async fn start(queue: usize) -> (std::net::SocketAddr, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    write_checkpoint(dir.path(), &Spec::tiny(), 4);
    let model = Model::load(dir.path()).unwrap();
    let cfg = ServerConfig {
        model_name: "tiny".into(),
        max_tokens_limit: 64,
        queue,
    };
    let app = router(model, cfg).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (addr, dir)
}

fn sse_events(body: &str) -> Vec<String> {
    body.lines()
        .filter_map(|l| l.strip_prefix("data: ").or_else(|| l.strip_prefix("data:")))
        .map(|s| s.trim().to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn completions_chat_models_and_metrics_over_http() {
    let (addr, _dir) = start(16).await;

    let r = http(addr, "GET", "/v1/models", "").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["data"][0]["id"], "tiny");

    let body = r#"{"model":"tiny","prompt":"hello magnet","max_tokens":8,"temperature":0}"#;
    let a = http(addr, "POST", "/v1/completions", body).await;
    assert_eq!(a.status, 200, "{}", a.body);
    let j = a.json();
    assert_eq!(j["object"], "text_completion");
    assert!(j["choices"][0]["text"].is_string());
    let ct = j["usage"]["completion_tokens"].as_u64().unwrap();
    assert!(ct <= 8);
    assert!(["stop", "length"].contains(&j["choices"][0]["finish_reason"].as_str().unwrap()));
    // Greedy is deterministic: the same request gives the same text.
    let b = http(addr, "POST", "/v1/completions", body).await;
    assert_eq!(b.json()["choices"][0]["text"], j["choices"][0]["text"]);

    // Streaming: the concatenated deltas equal the non-streamed text, then [DONE].
    let sbody =
        r#"{"model":"tiny","prompt":"hello magnet","max_tokens":8,"temperature":0,"stream":true}"#;
    let s = http(addr, "POST", "/v1/completions", sbody).await;
    assert_eq!(s.status, 200);
    assert!(
        s.headers.to_ascii_lowercase().contains("text/event-stream"),
        "{}",
        s.headers
    );
    let events = sse_events(&s.body);
    assert_eq!(events.last().unwrap(), "[DONE]");
    let mut text = String::new();
    let mut finish = None;
    for e in &events[..events.len() - 1] {
        let v: Value = serde_json::from_str(e).unwrap();
        text.push_str(v["choices"][0]["text"].as_str().unwrap());
        if let Some(f) = v["choices"][0]["finish_reason"].as_str() {
            finish = Some(f.to_string());
        }
    }
    assert_eq!(text, j["choices"][0]["text"].as_str().unwrap());
    assert_eq!(finish.as_deref(), j["choices"][0]["finish_reason"].as_str());

    // Chat, plain and streamed.
    let chat = r#"{"model":"tiny","messages":[{"role":"user","content":"hello"}],"max_tokens":6,"temperature":0}"#;
    let c = http(addr, "POST", "/v1/chat/completions", chat).await;
    assert_eq!(c.status, 200, "{}", c.body);
    let cj = c.json();
    assert_eq!(cj["object"], "chat.completion");
    assert_eq!(cj["choices"][0]["message"]["role"], "assistant");
    let chat_s = chat.replace("}]", "}],\"stream\":true");
    let cs = http(addr, "POST", "/v1/chat/completions", &chat_s).await;
    let ev = sse_events(&cs.body);
    assert_eq!(ev.last().unwrap(), "[DONE]");
    let first: Value = serde_json::from_str(&ev[0]).unwrap();
    assert_eq!(first["object"], "chat.completion.chunk");
    assert_eq!(first["choices"][0]["delta"]["role"], "assistant");
    let streamed: String = ev[..ev.len() - 1]
        .iter()
        .map(|e| {
            serde_json::from_str::<Value>(e).unwrap()["choices"][0]["delta"]["content"]
                .as_str()
                .unwrap_or("")
                .to_string()
        })
        .collect();
    assert_eq!(
        streamed,
        cj["choices"][0]["message"]["content"].as_str().unwrap()
    );

    let m = http(addr, "GET", "/metrics", "").await;
    assert_eq!(m.status, 200);
    assert!(m.body.contains("magnet_infer_requests_total"));
    let gen: f64 = m
        .body
        .lines()
        .find(|l| l.starts_with("magnet_infer_completion_tokens_total "))
        .and_then(|l| l.split(' ').nth(1))
        .unwrap()
        .parse()
        .unwrap();
    assert!(gen >= ct as f64 * 3.0, "completion token counter {gen}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_get_openai_errors_with_the_right_status() {
    let (addr, _dir) = start(16).await;
    let cases = [
        ("/v1/completions", "{not json", 400, None),
        ("/v1/completions", r#"{"model":"tiny"}"#, 400, None),
        (
            "/v1/completions",
            r#"{"model":"gpt-4","prompt":"hi"}"#,
            404,
            Some("model_not_found"),
        ),
        (
            "/v1/completions",
            r#"{"model":"tiny","prompt":"hi","max_tokens":100000}"#,
            400,
            None,
        ),
        (
            "/v1/completions",
            r#"{"model":"tiny","prompt":"hi","max_tokens":60,"temperature":0}"#,
            200,
            None,
        ),
        (
            "/v1/completions",
            r#"{"model":"tiny","prompt":[1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20,21,22,23,24,25,26,27,28,29,30,31,32,33,34,35,36,37,38,39,40,41,42,43,44,45,46,47,48,49,50,51,52,53,54,55,56,57,58,59,60,61,62,63,64,65,66,67,68,69,70],"max_tokens":64}"#,
            400,
            Some("context_length_exceeded"),
        ),
        (
            "/v1/completions",
            r#"{"model":"tiny","prompt":[99999999]}"#,
            400,
            None,
        ),
        (
            "/v1/completions",
            r#"{"model":"tiny","prompt":"hi","temperature":-1}"#,
            400,
            None,
        ),
        (
            "/v1/chat/completions",
            r#"{"model":"tiny","messages":[]}"#,
            400,
            None,
        ),
        (
            "/v1/chat/completions",
            r#"{"model":"tiny","messages":"hi"}"#,
            400,
            None,
        ),
        ("/v1/nope", "{}", 404, None),
    ];
    for (path, body, status, code) in cases {
        let r = http(addr, "POST", path, body).await;
        assert_eq!(r.status, status, "{path} {body}: {}", r.body);
        if status != 200 {
            let j = r.json();
            assert!(
                j["error"]["message"].as_str().unwrap().len() > 3,
                "{}",
                r.body
            );
            assert!(j["error"]["type"].is_string());
            if let Some(c) = code {
                assert_eq!(j["error"]["code"], c);
            }
        }
    }
    // After all that, the server still answers.
    assert_eq!(http(addr, "GET", "/v1/models", "").await.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_requests_are_queued_and_all_answered() {
    let (addr, _dir) = start(64).await;
    let body = r#"{"model":"tiny","prompt":"the quick brown fox","max_tokens":6,"temperature":0}"#;
    let want =
        http(addr, "POST", "/v1/completions", body).await.json()["choices"][0]["text"].clone();
    let tasks: Vec<_> = (0..8)
        .map(|_| tokio::spawn(async move { http(addr, "POST", "/v1/completions", body).await }))
        .collect();
    for t in tasks {
        let r = t.await.unwrap();
        assert_eq!(r.status, 200, "{}", r.body);
        assert_eq!(
            r.json()["choices"][0]["text"],
            want,
            "queued requests give the same greedy text"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_queue_answers_503_and_recovers() {
    let (addr, _dir) = start(1).await;
    let body = r#"{"model":"tiny","prompt":"hello","max_tokens":60,"temperature":0}"#;
    let tasks: Vec<_> = (0..12)
        .map(|_| tokio::spawn(async move { http(addr, "POST", "/v1/completions", body).await }))
        .collect();
    let mut statuses = Vec::new();
    for t in tasks {
        let r = t.await.unwrap();
        if r.status == 503 {
            assert_eq!(r.json()["error"]["type"], "server_error");
        }
        statuses.push(r.status);
    }
    assert!(
        statuses.iter().all(|s| *s == 200 || *s == 503),
        "{statuses:?}"
    );
    assert!(statuses.contains(&200));
    assert_eq!(
        http(addr, "POST", "/v1/completions", body).await.status,
        200
    );
}
