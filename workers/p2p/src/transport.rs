//! Sockets: a TLS 1.3 accept loop feeding tonic's `serve_with_incoming`, and a dialer that runs
//! the TLS handshake (with the pin check) inside tonic's connector, on the connection that then
//! carries the RPCs.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::server::TlsStream;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::{Channel, Endpoint};

use crate::tls::PeerTrust;

/// Largest gRPC message accepted or sent (a 16 MiB shard plus framing).
pub const MAX_MESSAGE_BYTES: usize = 64 * 1024 * 1024;
/// A handshake that takes longer is dropped (slowloris).
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Accepts TCP connections and completes TLS handshakes concurrently; failed handshakes (plaintext
/// clients, TLS 1.2, garbage) are logged and dropped without disturbing the accept loop.
pub fn tls_incoming(
    listener: TcpListener,
    config: Arc<rustls::ServerConfig>,
) -> ReceiverStream<Result<TlsStream<TcpStream>, std::io::Error>> {
    let acceptor = tokio_rustls::TlsAcceptor::from(config);
    let (tx, rx) = mpsc::channel(64);
    tokio::spawn(async move {
        loop {
            let accepted = tokio::select! {
                a = listener.accept() => a,
                () = tx.closed() => break,
            };
            match accepted {
                Ok((tcp, peer)) => {
                    let _ = tcp.set_nodelay(true);
                    let acceptor = acceptor.clone();
                    let tx = tx.clone();
                    tokio::spawn(async move {
                        match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                            Ok(Ok(stream)) => {
                                let _ = tx.send(Ok(stream)).await;
                            }
                            Ok(Err(e)) => tracing::warn!(%peer, "TLS handshake refused: {e}"),
                            Err(_) => tracing::warn!(%peer, "TLS handshake timed out"),
                        }
                    });
                }
                Err(e) => {
                    tracing::warn!("accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    });
    ReceiverStream::new(rx)
}

/// A running server; dropping it does not stop it, `shutdown` does.
#[derive(Debug)]
pub struct ServerHandle {
    /// Bound address.
    pub addr: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<Result<(), tonic::transport::Error>>,
}

impl ServerHandle {
    /// Stops accepting and waits for the server task.
    pub async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        // Give in-flight requests a moment, then abort.
        if tokio::time::timeout(Duration::from_secs(2), &mut self.task)
            .await
            .is_err()
        {
            self.task.abort();
        }
    }
}

/// Serves `router` over TLS on `listener`.
pub fn serve(
    listener: TcpListener,
    config: Arc<rustls::ServerConfig>,
    router: tonic::transport::server::Router,
) -> anyhow::Result<ServerHandle> {
    let addr = listener.local_addr().context("local addr")?;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let incoming = tls_incoming(listener, config);
    let task = tokio::spawn(router.serve_with_incoming_shutdown(incoming, async {
        let _ = stopped.await;
    }));
    Ok(ServerHandle {
        addr,
        stop: Some(stop),
        task,
    })
}

/// The tonic server builder used by every MAGNET node.
pub fn server_builder() -> tonic::transport::Server {
    tonic::transport::Server::builder()
        .tcp_nodelay(true)
        .http2_keepalive_interval(Some(Duration::from_secs(20)))
        .initial_stream_window_size(Some(4 * 1024 * 1024))
        .initial_connection_window_size(Some(16 * 1024 * 1024))
}

/// Dials `peer` (host:port) over TLS 1.3, checking its certificate per `trust`.
pub async fn connect(peer: &str, trust: &PeerTrust) -> anyhow::Result<Channel> {
    let config = trust.client_config(peer)?;
    let host = peer
        .rsplit_once(':')
        .map(|(h, _)| h)
        .unwrap_or(peer)
        .trim_matches(['[', ']']);
    let server_name = ServerName::try_from(host.to_string())
        .with_context(|| format!("bad peer host {host:?}"))?;
    let connector = tokio_rustls::TlsConnector::from(config);
    let target = peer.to_string();
    let endpoint = Endpoint::from_shared(format!("http://{peer}"))
        .with_context(|| format!("bad peer address {peer:?}"))?
        .connect_timeout(Duration::from_secs(5))
        .tcp_nodelay(true)
        .initial_stream_window_size(Some(4 * 1024 * 1024))
        .initial_connection_window_size(Some(16 * 1024 * 1024));
    let channel = endpoint
        .connect_with_connector(tower::service_fn(move |_uri: http::Uri| {
            let connector = connector.clone();
            let server_name = server_name.clone();
            let target = target.clone();
            async move {
                let tcp = TcpStream::connect(&target).await?;
                tcp.set_nodelay(true)?;
                let tls = connector.connect(server_name, tcp).await?;
                Ok::<_, std::io::Error>(TokioIo::new(tls))
            }
        }))
        .await
        .map_err(|e| anyhow::anyhow!("connect to {peer}: {}", error_chain(&e)))?;
    Ok(channel)
}

/// An error and all its causes on one line (tonic's transport errors hide the rustls reason).
pub fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    while let Some(s) = cur {
        let msg = s.to_string();
        if !out.contains(&msg) {
            out.push_str(": ");
            out.push_str(&msg);
        }
        cur = s.source();
    }
    out
}
