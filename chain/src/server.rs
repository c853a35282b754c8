//! ABCI socket server: tower-abci's v0.38 server in front of a single task that owns
//! the [`App`]. The four ABCI connections share a cheap cloneable handle that sends
//! each request down a channel, so requests are served strictly one at a time.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use tendermint::v0_38::abci::{Request, Response};
use tokio::sync::{mpsc, oneshot};
use tower_abci::BoxError;

use crate::app::App;

type Job = (Request, oneshot::Sender<Result<Response, String>>);

/// Requests are enqueued synchronously in `call`, so the app sees them in exactly the
/// order each ABCI connection delivered them even when many are in flight (CheckTx
/// order matters: a sender's sequence numbers arrive in order). Backpressure comes
/// from tower-abci's per-connection buffer bound.
#[derive(Clone)]
pub struct AppHandle {
    tx: mpsc::UnboundedSender<Job>,
}

impl AppHandle {
    /// Spawns the task that owns `app` and returns the handle that feeds it.
    pub fn spawn(mut app: App) -> AppHandle {
        let (tx, mut rx) = mpsc::unbounded_channel::<Job>();
        tokio::spawn(async move {
            while let Some((req, reply)) = rx.recv().await {
                let res = dispatch(&mut app, req).await.map_err(|e| format!("{e:#}"));
                if let Err(e) = &res {
                    tracing::error!(error = %e, "ABCI request failed");
                }
                let _ = reply.send(res);
            }
        });
        AppHandle { tx }
    }

    /// Enqueues a request now and returns a future for its response.
    pub fn enqueue(
        &self,
        req: Request,
    ) -> impl Future<Output = Result<Response, BoxError>> + Send + 'static {
        let (reply_tx, reply_rx) = oneshot::channel();
        let sent = self.tx.send((req, reply_tx)).is_ok();
        async move {
            if !sent {
                return Err("app task stopped".into());
            }
            let res = reply_rx.await.map_err(|_| "app task dropped the request")?;
            res.map_err(|e| e.into())
        }
    }

    pub async fn call(&self, req: Request) -> Result<Response, BoxError> {
        self.enqueue(req).await
    }
}

/// Routes one request to the app. Errors here are node-level failures (corrupt
/// state, wrong height): CometBFT must stop rather than continue with a bad state.
pub async fn dispatch(app: &mut App, req: Request) -> anyhow::Result<Response> {
    Ok(match req {
        Request::Echo(e) => Response::Echo(tendermint::abci::response::Echo { message: e.message }),
        Request::Flush => Response::Flush,
        Request::Info(r) => Response::Info(app.info(r).await?),
        Request::Query(r) => Response::Query(app.query(r).await),
        Request::InitChain(r) => Response::InitChain(app.init_chain(r).await?),
        Request::CheckTx(r) => Response::CheckTx(app.check_tx(r).await),
        Request::PrepareProposal(r) => Response::PrepareProposal(app.prepare_proposal(r).await?),
        Request::ProcessProposal(r) => Response::ProcessProposal(app.process_proposal(r).await?),
        Request::FinalizeBlock(r) => Response::FinalizeBlock(app.finalize_block(r).await?),
        Request::Commit => Response::Commit(app.commit().await?),
        Request::ExtendVote(_) => Response::ExtendVote(tendermint::abci::response::ExtendVote {
            vote_extension: bytes::Bytes::new(),
        }),
        Request::VerifyVoteExtension(_) => {
            Response::VerifyVoteExtension(tendermint::abci::response::VerifyVoteExtension::Accept)
        }
        Request::ListSnapshots => Response::ListSnapshots(Default::default()),
        Request::OfferSnapshot(_) => Response::OfferSnapshot(Default::default()),
        Request::LoadSnapshotChunk(_) => Response::LoadSnapshotChunk(Default::default()),
        Request::ApplySnapshotChunk(_) => Response::ApplySnapshotChunk(Default::default()),
    })
}

impl tower::Service<Request> for AppHandle {
    type Response = Response;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Response, BoxError>> + Send + 'static>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request) -> Self::Future {
        Box::pin(self.enqueue(req))
    }
}

/// Serves ABCI on `addr` (`tcp://host:port` or `unix:///path`) until the process ends.
pub async fn serve(app: App, addr: &str) -> anyhow::Result<()> {
    let handle = AppHandle::spawn(app);
    let (consensus, mempool, snapshot, info) = tower_abci::v038::split::service(handle, 256);
    let server = tower_abci::v038::Server::builder()
        .consensus(consensus)
        .mempool(mempool)
        .snapshot(snapshot)
        .info(info)
        .finish()
        .ok_or_else(|| anyhow::anyhow!("incomplete ABCI server"))?;
    if let Some(path) = addr.strip_prefix("unix://") {
        let _ = std::fs::remove_file(path);
        server
            .listen_unix(path)
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))
    } else {
        let hostport = addr.strip_prefix("tcp://").unwrap_or(addr).to_string();
        server
            .listen_tcp(hostport)
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))
    }
}
