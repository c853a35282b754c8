//! OpenAI-compatible HTTP server (placeholder).

use crate::model::Model;

/// Server settings.
pub struct ServerConfig {
    /// Name clients put in `model`.
    pub model_name: String,
    /// Largest `max_tokens` accepted.
    pub max_tokens_limit: usize,
    /// Queue depth.
    pub queue: usize,
}

/// Serves until the listener fails.
pub async fn serve(
    _listener: tokio::net::TcpListener,
    _model: Model,
    _cfg: ServerConfig,
) -> anyhow::Result<()> {
    anyhow::bail!("server not implemented yet")
}
