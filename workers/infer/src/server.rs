//! OpenAI-compatible HTTP server: `POST /v1/completions`, `POST /v1/chat/completions` (both with
//! `stream: true` as server-sent events), `GET /v1/models`, `GET /metrics` (Prometheus).
//!
//! One engine thread owns the [`Model`] and serves a bounded request queue in order; the HTTP
//! side (axum/tokio) validates requests, answers errors in OpenAI's format, and relays tokens.
//! A full queue answers 503; a client that disconnects stops its generation.

use std::convert::Infallible;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, SyncSender, TrySendError};
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::sse::{Event, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use futures::Stream;
use serde::Deserialize;
use serde_json::{json, Value};
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver, UnboundedSender};

use crate::model::{FinishReason, Model};
use crate::sampling::SamplingParams;

/// Server settings.
#[derive(Clone, Debug)]
pub struct ServerConfig {
    /// Name clients put in `model`.
    pub model_name: String,
    /// Largest `max_tokens` accepted.
    pub max_tokens_limit: usize,
    /// Requests that may wait for the engine; beyond that, 503.
    pub queue: usize,
}

/// What the engine thread sends back for one request.
enum Update {
    /// New text (may be empty when a token completes no character yet).
    Text(String),
    /// Generation finished.
    Done {
        finish: FinishReason,
        prompt_tokens: usize,
        completion_tokens: usize,
    },
    /// The engine failed.
    Failed(String),
}

struct Job {
    prompt: Vec<u32>,
    max_tokens: usize,
    params: SamplingParams,
    updates: UnboundedSender<Update>,
}

#[derive(Default)]
struct Metrics {
    requests: AtomicU64,
    errors_4xx: AtomicU64,
    errors_5xx: AtomicU64,
    prompt_tokens: AtomicU64,
    completion_tokens: AtomicU64,
    generation_micros: AtomicU64,
    queued: AtomicU64,
}

struct AppState {
    cfg: ServerConfig,
    jobs: SyncSender<Job>,
    tokenizer: Option<tokenizers::Tokenizer>,
    context: usize,
    vocab: usize,
    bos: Option<u32>,
    metrics: Arc<Metrics>,
    next_id: AtomicU64,
}

/// An OpenAI-style error.
struct ApiError {
    status: StatusCode,
    message: String,
    kind: &'static str,
    code: Option<&'static str>,
    param: Option<&'static str>,
}

impl ApiError {
    fn bad(message: impl Into<String>, param: Option<&'static str>) -> ApiError {
        ApiError {
            status: StatusCode::BAD_REQUEST,
            message: message.into(),
            kind: "invalid_request_error",
            code: None,
            param,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = json!({"error": {"message": self.message, "type": self.kind, "param": self.param, "code": self.code}});
        (self.status, Json(body)).into_response()
    }
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Serves until the listener fails.
pub async fn serve(
    listener: tokio::net::TcpListener,
    model: Model,
    cfg: ServerConfig,
) -> anyhow::Result<()> {
    axum::serve(listener, router(model, cfg)?).await?;
    Ok(())
}

/// The HTTP routes, with the engine thread started behind them.
pub fn router(model: Model, cfg: ServerConfig) -> anyhow::Result<Router> {
    let (tx, rx) = sync_channel::<Job>(cfg.queue.max(1));
    let metrics = Arc::new(Metrics::default());
    let state = Arc::new(AppState {
        cfg,
        jobs: tx,
        tokenizer: model.tokenizer.clone(),
        context: model.config.max_position_embeddings,
        vocab: model.config.vocab_size,
        bos: model.config.bos_token_id,
        metrics: metrics.clone(),
        next_id: AtomicU64::new(1),
    });
    std::thread::Builder::new()
        .name("infer-engine".into())
        .spawn(move || engine_loop(model, rx, metrics))?;
    Ok(Router::new()
        .route("/v1/models", get(list_models))
        .route("/v1/completions", post(completions))
        .route("/v1/chat/completions", post(chat_completions))
        .route("/metrics", get(metrics_text))
        .fallback(|| async {
            ApiError {
                status: StatusCode::NOT_FOUND,
                message: "no such route".into(),
                kind: "invalid_request_error",
                code: None,
                param: None,
            }
        })
        .with_state(state))
}

fn engine_loop(model: Model, rx: std::sync::mpsc::Receiver<Job>, metrics: Arc<Metrics>) {
    while let Ok(job) = rx.recv() {
        metrics.queued.fetch_sub(1, Ordering::Relaxed);
        let t = Instant::now();
        let mut toks = Vec::new();
        let mut shown = String::new();
        let updates = job.updates.clone();
        let result = model.generate(&job.prompt, job.max_tokens, &job.params, |tok| {
            toks.push(tok);
            let text = model.decode(&toks).unwrap_or_default();
            // Hold text back while it ends in an incomplete UTF-8 sequence (decoded as U+FFFD);
            // it is sent once a later token completes it, or at the end.
            if !text.ends_with('\u{FFFD}') {
                if let Some(delta) = text.strip_prefix(shown.as_str()) {
                    if !delta.is_empty() && updates.send(Update::Text(delta.to_string())).is_err() {
                        return false; // client went away
                    }
                    shown = text;
                }
            }
            true
        });
        if let Ok(text) = model.decode(&toks) {
            if let Some(rest) = text.strip_prefix(shown.as_str()).filter(|r| !r.is_empty()) {
                let _ = job.updates.send(Update::Text(rest.to_string()));
            }
        }
        metrics
            .generation_micros
            .fetch_add(t.elapsed().as_micros() as u64, Ordering::Relaxed);
        let _ = match result {
            Ok(g) => {
                metrics
                    .prompt_tokens
                    .fetch_add(job.prompt.len() as u64, Ordering::Relaxed);
                metrics
                    .completion_tokens
                    .fetch_add(g.tokens.len() as u64, Ordering::Relaxed);
                job.updates.send(Update::Done {
                    finish: g.finish,
                    prompt_tokens: job.prompt.len(),
                    completion_tokens: g.tokens.len(),
                })
            }
            Err(e) => job.updates.send(Update::Failed(e.to_string())),
        };
    }
}

async fn list_models(State(st): State<Arc<AppState>>) -> Response {
    st.metrics.requests.fetch_add(1, Ordering::Relaxed);
    Json(json!({"object": "list", "data": [{"id": st.cfg.model_name, "object": "model", "created": 0, "owned_by": "magnet"}]}))
        .into_response()
}

async fn metrics_text(State(st): State<Arc<AppState>>) -> Response {
    let m = &st.metrics;
    let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
    let body = format!(
        "# HELP magnet_infer_requests_total HTTP requests received.\n# TYPE magnet_infer_requests_total counter\nmagnet_infer_requests_total {}\n\
         # HELP magnet_infer_request_errors_total Requests answered with an error.\n# TYPE magnet_infer_request_errors_total counter\n\
         magnet_infer_request_errors_total{{class=\"4xx\"}} {}\nmagnet_infer_request_errors_total{{class=\"5xx\"}} {}\n\
         # HELP magnet_infer_prompt_tokens_total Prompt tokens processed.\n# TYPE magnet_infer_prompt_tokens_total counter\nmagnet_infer_prompt_tokens_total {}\n\
         # HELP magnet_infer_completion_tokens_total Tokens generated.\n# TYPE magnet_infer_completion_tokens_total counter\nmagnet_infer_completion_tokens_total {}\n\
         # HELP magnet_infer_generation_seconds_total Engine time spent generating.\n# TYPE magnet_infer_generation_seconds_total counter\nmagnet_infer_generation_seconds_total {:.6}\n\
         # HELP magnet_infer_queue_depth Requests waiting for the engine.\n# TYPE magnet_infer_queue_depth gauge\nmagnet_infer_queue_depth {}\n",
        g(&m.requests),
        g(&m.errors_4xx),
        g(&m.errors_5xx),
        g(&m.prompt_tokens),
        g(&m.completion_tokens),
        g(&m.generation_micros) as f64 / 1e6,
        g(&m.queued),
    );
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], body).into_response()
}

/// Fields shared by both endpoints.
#[derive(Deserialize)]
struct Common {
    model: String,
    #[serde(default)]
    max_tokens: Option<usize>,
    #[serde(default)]
    max_completion_tokens: Option<usize>,
    #[serde(default)]
    temperature: Option<f32>,
    #[serde(default)]
    top_p: Option<f32>,
    #[serde(default)]
    top_k: Option<usize>,
    #[serde(default)]
    seed: Option<u64>,
    #[serde(default)]
    stream: bool,
}

#[derive(Deserialize)]
struct CompletionRequest {
    #[serde(flatten)]
    common: Common,
    prompt: Value,
}

#[derive(Deserialize)]
struct ChatMessage {
    role: String,
    content: String,
}

#[derive(Deserialize)]
struct ChatRequest {
    #[serde(flatten)]
    common: Common,
    messages: Vec<ChatMessage>,
}

/// Plain chat template: `role: content` lines, then `assistant:`.
fn chat_prompt(messages: &[ChatMessage]) -> String {
    let mut s = String::new();
    for m in messages {
        s.push_str(&m.role);
        s.push_str(": ");
        s.push_str(&m.content);
        s.push('\n');
    }
    s.push_str("assistant:");
    s
}

fn parse_body<T: serde::de::DeserializeOwned>(body: &Bytes) -> Result<T, ApiError> {
    serde_json::from_slice(body)
        .map_err(|e| ApiError::bad(format!("could not parse the JSON body: {e}"), None))
}

/// Validated generation request.
struct Prepared {
    prompt: Vec<u32>,
    max_tokens: usize,
    params: SamplingParams,
    stream: bool,
}

fn prepare(st: &AppState, c: &Common, prompt: Prompt) -> Result<Prepared, ApiError> {
    if c.model != st.cfg.model_name {
        return Err(ApiError {
            status: StatusCode::NOT_FOUND,
            message: format!(
                "The model `{}` does not exist (this server serves `{}`)",
                c.model, st.cfg.model_name
            ),
            kind: "invalid_request_error",
            code: Some("model_not_found"),
            param: Some("model"),
        });
    }
    let max_tokens = c.max_completion_tokens.or(c.max_tokens).unwrap_or(16);
    if max_tokens > st.cfg.max_tokens_limit {
        return Err(ApiError::bad(
            format!(
                "max_tokens is {max_tokens}, this server allows at most {}",
                st.cfg.max_tokens_limit
            ),
            Some("max_tokens"),
        ));
    }
    let temperature = c.temperature.unwrap_or(1.0);
    if !(0.0..=2.0).contains(&temperature) {
        return Err(ApiError::bad(
            format!("temperature must be in [0, 2], got {temperature}"),
            Some("temperature"),
        ));
    }
    let top_p = c.top_p.unwrap_or(1.0);
    if !(top_p > 0.0 && top_p <= 1.0) {
        return Err(ApiError::bad(
            format!("top_p must be in (0, 1], got {top_p}"),
            Some("top_p"),
        ));
    }
    let mut ids = match prompt {
        Prompt::Ids(ids) => ids,
        Prompt::Text(text) => {
            let tok = st.tokenizer.as_ref().ok_or_else(|| {
                ApiError::bad(
                    "this model has no tokenizer; send token ids",
                    Some("prompt"),
                )
            })?;
            tok.encode(text, false)
                .map_err(|e| ApiError::bad(format!("tokenizer: {e}"), Some("prompt")))?
                .get_ids()
                .to_vec()
        }
    };
    if let Some(bad) = ids.iter().find(|&&t| t as usize >= st.vocab) {
        return Err(ApiError::bad(
            format!("token id {bad} is outside the vocabulary of {}", st.vocab),
            Some("prompt"),
        ));
    }
    if ids.is_empty() {
        ids.extend(st.bos);
    }
    if ids.is_empty() {
        return Err(ApiError::bad("the prompt is empty", Some("prompt")));
    }
    if ids.len() + max_tokens > st.context {
        return Err(ApiError {
            status: StatusCode::BAD_REQUEST,
            message: format!(
                "This model's maximum context length is {} tokens. However, you requested {} tokens ({} in the prompt, {max_tokens} for the completion).",
                st.context,
                ids.len() + max_tokens,
                ids.len()
            ),
            kind: "invalid_request_error",
            code: Some("context_length_exceeded"),
            param: Some("max_tokens"),
        });
    }
    Ok(Prepared {
        prompt: ids,
        max_tokens,
        params: SamplingParams {
            temperature,
            top_k: c.top_k.unwrap_or(0),
            top_p,
            seed: c.seed.unwrap_or(0),
        },
        stream: c.stream,
    })
}

enum Prompt {
    Text(String),
    Ids(Vec<u32>),
}

fn completion_prompt(v: &Value) -> Result<Prompt, ApiError> {
    let err = || {
        ApiError::bad(
            "prompt must be a string, a one-element array of strings, or an array of token ids",
            Some("prompt"),
        )
    };
    match v {
        Value::String(s) => Ok(Prompt::Text(s.clone())),
        Value::Array(a) if a.len() == 1 && a[0].is_string() => {
            Ok(Prompt::Text(a[0].as_str().unwrap_or_default().to_string()))
        }
        Value::Array(a) => a
            .iter()
            .map(|x| {
                x.as_u64()
                    .and_then(|v| u32::try_from(v).ok())
                    .ok_or_else(err)
            })
            .collect::<Result<Vec<u32>, _>>()
            .map(Prompt::Ids),
        _ => Err(err()),
    }
}

fn submit(st: &AppState, p: &Prepared) -> Result<UnboundedReceiver<Update>, ApiError> {
    let (tx, rx) = unbounded_channel();
    let job = Job {
        prompt: p.prompt.clone(),
        max_tokens: p.max_tokens,
        params: p.params.clone(),
        updates: tx,
    };
    st.metrics.queued.fetch_add(1, Ordering::Relaxed);
    match st.jobs.try_send(job) {
        Ok(()) => Ok(rx),
        Err(e) => {
            st.metrics.queued.fetch_sub(1, Ordering::Relaxed);
            let message = match e {
                TrySendError::Full(_) => "the server is busy (request queue full); retry later",
                TrySendError::Disconnected(_) => "the inference engine has stopped",
            };
            Err(ApiError {
                status: StatusCode::SERVICE_UNAVAILABLE,
                message: message.into(),
                kind: "server_error",
                code: None,
                param: None,
            })
        }
    }
}

/// Collects a whole generation.
async fn collect(
    mut rx: UnboundedReceiver<Update>,
) -> Result<(String, FinishReason, usize, usize), ApiError> {
    let mut text = String::new();
    while let Some(u) = rx.recv().await {
        match u {
            Update::Text(t) => text.push_str(&t),
            Update::Done {
                finish,
                prompt_tokens,
                completion_tokens,
            } => return Ok((text, finish, prompt_tokens, completion_tokens)),
            Update::Failed(m) => return Err(engine_error(m)),
        }
    }
    Err(engine_error("the engine dropped the request".into()))
}

fn engine_error(message: String) -> ApiError {
    ApiError {
        status: StatusCode::INTERNAL_SERVER_ERROR,
        message,
        kind: "server_error",
        code: None,
        param: None,
    }
}

#[derive(Clone, Copy)]
enum Kind {
    Completion,
    Chat,
}

/// SSE stream of OpenAI chunks, ending with `[DONE]`.
fn sse(
    rx: UnboundedReceiver<Update>,
    kind: Kind,
    id: String,
    model: String,
) -> impl Stream<Item = Result<Event, Infallible>> {
    let created = now();
    let chunk = move |text: Option<&str>, finish: Option<&str>, first: bool| -> Value {
        match kind {
            Kind::Completion => {
                json!({"id": id, "object": "text_completion", "created": created, "model": model,
                "choices": [{"index": 0, "text": text.unwrap_or(""), "logprobs": null, "finish_reason": finish}]})
            }
            Kind::Chat => {
                let mut delta = serde_json::Map::new();
                if first {
                    delta.insert("role".into(), json!("assistant"));
                }
                if let Some(t) = text {
                    delta.insert("content".into(), json!(t));
                }
                json!({"id": id, "object": "chat.completion.chunk", "created": created, "model": model,
                    "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]})
            }
        }
    };
    futures::stream::unfold((rx, false, false), move |(mut rx, first_sent, done)| {
        let chunk = chunk.clone();
        async move {
            if done {
                return None;
            }
            let ev = |v: Value| Event::default().data(v.to_string());
            if !first_sent {
                if let Kind::Chat = kind {
                    return Some((Ok(ev(chunk(None, None, true))), (rx, true, false)));
                }
            }
            match rx.recv().await {
                Some(Update::Text(t)) => {
                    Some((Ok(ev(chunk(Some(&t), None, false))), (rx, true, false)))
                }
                Some(Update::Done { finish, .. }) => Some((
                    Ok(ev(chunk(None, Some(finish.as_str()), false))),
                    (rx, true, false),
                )),
                Some(Update::Failed(m)) => Some((
                    Ok(ev(
                        json!({"error": {"message": m, "type": "server_error", "param": null, "code": null}}),
                    )),
                    (rx, true, false),
                )),
                None => Some((Ok(Event::default().data("[DONE]")), (rx, true, true))),
            }
        }
    })
}

fn count(st: &AppState, r: &Result<Response, ApiError>) {
    st.metrics.requests.fetch_add(1, Ordering::Relaxed);
    if let Err(e) = r {
        let c = if e.status.is_server_error() {
            &st.metrics.errors_5xx
        } else {
            &st.metrics.errors_4xx
        };
        c.fetch_add(1, Ordering::Relaxed);
    }
}

async fn completions(State(st): State<Arc<AppState>>, body: Bytes) -> Response {
    let r = completions_inner(&st, body).await;
    count(&st, &r);
    r.unwrap_or_else(IntoResponse::into_response)
}

async fn completions_inner(st: &AppState, body: Bytes) -> Result<Response, ApiError> {
    let req: CompletionRequest = parse_body(&body)?;
    let p = prepare(st, &req.common, completion_prompt(&req.prompt)?)?;
    let id = format!("cmpl-{}", st.next_id.fetch_add(1, Ordering::Relaxed));
    let rx = submit(st, &p)?;
    if p.stream {
        return Ok(
            Sse::new(sse(rx, Kind::Completion, id, st.cfg.model_name.clone())).into_response(),
        );
    }
    let (text, finish, pt, ct) = collect(rx).await?;
    Ok(Json(json!({
        "id": id, "object": "text_completion", "created": now(), "model": st.cfg.model_name,
        "choices": [{"index": 0, "text": text, "logprobs": null, "finish_reason": finish.as_str()}],
        "usage": {"prompt_tokens": pt, "completion_tokens": ct, "total_tokens": pt + ct}
    }))
    .into_response())
}

async fn chat_completions(State(st): State<Arc<AppState>>, body: Bytes) -> Response {
    let r = chat_inner(&st, body).await;
    count(&st, &r);
    r.unwrap_or_else(IntoResponse::into_response)
}

async fn chat_inner(st: &AppState, body: Bytes) -> Result<Response, ApiError> {
    let req: ChatRequest = parse_body(&body)?;
    if req.messages.is_empty() {
        return Err(ApiError::bad(
            "messages must not be empty",
            Some("messages"),
        ));
    }
    let p = prepare(st, &req.common, Prompt::Text(chat_prompt(&req.messages)))?;
    let id = format!("chatcmpl-{}", st.next_id.fetch_add(1, Ordering::Relaxed));
    let rx = submit(st, &p)?;
    if p.stream {
        return Ok(Sse::new(sse(rx, Kind::Chat, id, st.cfg.model_name.clone())).into_response());
    }
    let (text, finish, pt, ct) = collect(rx).await?;
    Ok(Json(json!({
        "id": id, "object": "chat.completion", "created": now(), "model": st.cfg.model_name,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": finish.as_str()}],
        "usage": {"prompt_tokens": pt, "completion_tokens": ct, "total_tokens": pt + ct}
    }))
    .into_response())
}
