//! magnet-p2p: the transport between MAGNET workers (paper §11). gRPC (tonic) over TLS 1.3 with
//! trust-on-first-use certificate pinning ([`tls`]); every RPC signed by the sender's node key or a
//! cluster secret ([`auth`]); node identity from a secp256k1 key ([`identity`]). The services
//! (peer discovery, DiLoCo round control, gradient streams, storage shards) are in [`proto`];
//! [`service`] implements the P2p service and [`client`] dials peers.
#![allow(clippy::arithmetic_side_effects)] // byte counts and offsets; peer-supplied sizes are checked explicitly
#![allow(clippy::result_large_err)] // tonic::Status is the error type of every gRPC handler

pub mod auth;
pub mod identity;

/// Generated protobuf types, clients and servers of `magnet.p2p.v1`.
#[allow(missing_docs, clippy::all)]
pub mod proto {
    tonic::include_proto!("magnet.p2p.v1");
}
pub mod node;
pub mod service;
pub mod tls;
pub mod transport;
