//! Real sockets, real TLS: signed RPCs succeed, and every kind of forgery, replay, stale request,
//! wrong secret, changed certificate, plaintext or TLS 1.2 client is refused with a clear error.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use k256::ecdsa::{Signature, SigningKey};
use magnet_p2p::auth::{sha256_hex, unix_now, AuthMode, SignedHeaders, Signer, DEFAULT_WINDOW};
use magnet_p2p::node::{serve_p2p, NodeIdentity};
use magnet_p2p::proto::p2p_client::P2pClient;
use magnet_p2p::proto::{HeartbeatRequest, PeerInfo, RoundAnnouncement};
use magnet_p2p::service::{fetch_gradient, methods, push_gradient, ControlEvent};
use prost::Message;
use tonic::transport::Channel;

struct Node {
    _dir: tempfile::TempDir,
    id: NodeIdentity,
}

fn node(mode: AuthMode) -> Node {
    let dir = tempfile::tempdir().expect("tempdir");
    let id = NodeIdentity::load(dir.path(), mode, DEFAULT_WINDOW).expect("identity");
    Node { _dir: dir, id }
}

fn announcement(leader: &str, round: u64) -> RoundAnnouncement {
    RoundAnnouncement {
        round,
        leader: leader.into(),
        base_checkpoint: "ab".repeat(32),
        inner_steps: 500,
        deadline: 0,
    }
}

/// Sends an announcement with explicit headers (to forge them).
async fn announce_with(
    client: &mut P2pClient<Channel>,
    msg: RoundAnnouncement,
    headers: &SignedHeaders,
) -> Result<(), tonic::Status> {
    let mut req = tonic::Request::new(msg);
    headers.insert_into(req.metadata_mut()).expect("headers");
    client.announce_round(req).await.map(|_| ())
}

fn body_hash(msg: &RoundAnnouncement) -> String {
    sha256_hex(&msg.encode_to_vec())
}

fn nonce() -> String {
    let mut n = [0u8; 16];
    rand_core::RngCore::fill_bytes(&mut rand_core::OsRng, &mut n);
    hex::encode(n)
}

fn expect_refused(r: Result<(), tonic::Status>, needle: &str) {
    let status = r.expect_err("request must be refused");
    assert_eq!(status.code(), tonic::Code::Unauthenticated, "{status:?}");
    assert!(
        status.message().contains(needle),
        "expected {needle:?} in {:?}",
        status.message()
    );
}

#[tokio::test]
async fn signed_rpcs_over_tls_work_and_forgeries_are_refused() {
    let server = node(AuthMode::Wallet);
    let client_node = node(AuthMode::Wallet);
    let (handle, service) = serve_p2p(&server.id, "127.0.0.70:0", "trainer", 64 << 20)
        .await
        .expect("serve");
    let addr = handle.addr.to_string();
    let mut events = service.subscribe();
    let mut client = client_node.id.p2p_client(&addr).await.expect("connect");
    let signer = &client_node.id.signer;
    let me = signer.node_id().to_string();

    // Heartbeat: discovery both ways.
    let hb = HeartbeatRequest {
        self_info: Some(PeerInfo {
            node_id: me.clone(),
            addr: "127.0.0.71:1".into(),
            role: "trainer".into(),
            last_seen: 0,
        }),
        known_peers: vec![],
    };
    let resp = client
        .heartbeat(signer.request(methods::HEARTBEAT, hb).expect("sign"))
        .await
        .expect("heartbeat");
    assert_eq!(
        resp.into_inner().self_info.expect("self").node_id,
        server.id.node_id
    );
    assert_eq!(
        service
            .peers()
            .iter()
            .map(|p| p.node_id.clone())
            .collect::<Vec<_>>(),
        vec![me.clone()]
    );

    // A valid announcement is delivered to the training loop.
    let msg = announcement(&me, 7);
    client
        .announce_round(
            signer
                .request(methods::ANNOUNCE_ROUND, msg.clone())
                .expect("sign"),
        )
        .await
        .expect("ok");
    match events.recv().await.expect("event") {
        ControlEvent::RoundAnnounced { from, msg: got } => {
            assert_eq!(from, me);
            assert_eq!(got, msg);
        }
        other => panic!("unexpected {other:?}"),
    }

    // Streamed gradient push/fetch, 3.5 MB, hash-checked.
    let payload: Bytes = (0..3_500_000u32)
        .map(|i| (i * 31 % 251) as u8)
        .collect::<Vec<u8>>()
        .into();
    let ack = push_gradient(&mut client, signer, 7, payload.clone())
        .await
        .expect("push");
    assert_eq!(ack.detail, sha256_hex(&payload));
    let back = fetch_gradient(&mut client, signer, 7, &me)
        .await
        .expect("fetch");
    assert_eq!(back, payload);

    // Forged signature: one bit of r flipped.
    let msg = announcement(&me, 8);
    let mut h = signer.sign_at(
        methods::ANNOUNCE_ROUND,
        &body_hash(&msg),
        unix_now(),
        &nonce(),
    );
    let mut sig = hex::decode(&h.signature).expect("hex");
    sig[3] ^= 0x01;
    h.signature = hex::encode(sig);
    let r = announce_with(&mut client, msg.clone(), &h).await;
    let status = r.expect_err("forged");
    assert_eq!(status.code(), tonic::Code::Unauthenticated);
    assert!(
        status.message().contains("not by the claimed node")
            || status.message().contains("invalid signature"),
        "{status:?}"
    );

    // Signature by another key than the claimed node id.
    let mallory = Signer::new(SigningKey::random(&mut rand_core::OsRng), AuthMode::Wallet);
    let mut h = mallory.sign_at(
        methods::ANNOUNCE_ROUND,
        &body_hash(&msg),
        unix_now(),
        &nonce(),
    );
    h.node_id = me.clone();
    expect_refused(
        announce_with(&mut client, msg.clone(), &h).await,
        "not by the claimed node",
    );

    // Body tampered after signing.
    let h = signer.sign_at(
        methods::ANNOUNCE_ROUND,
        &body_hash(&msg),
        unix_now(),
        &nonce(),
    );
    expect_refused(
        announce_with(&mut client, announcement(&me, 9), &h).await,
        "body hash mismatch",
    );

    // Stale and future timestamps.
    let h = signer.sign_at(
        methods::ANNOUNCE_ROUND,
        &body_hash(&msg),
        unix_now() - 301,
        &nonce(),
    );
    expect_refused(
        announce_with(&mut client, msg.clone(), &h).await,
        "stale timestamp",
    );
    let h = signer.sign_at(
        methods::ANNOUNCE_ROUND,
        &body_hash(&msg),
        unix_now() + 301,
        &nonce(),
    );
    expect_refused(
        announce_with(&mut client, msg.clone(), &h).await,
        "from the future",
    );

    // Replay of a valid request inside the window.
    let h = signer.sign_at(
        methods::ANNOUNCE_ROUND,
        &body_hash(&msg),
        unix_now(),
        &nonce(),
    );
    announce_with(&mut client, msg.clone(), &h)
        .await
        .expect("first use accepted");
    expect_refused(
        announce_with(&mut client, msg.clone(), &h).await,
        "replayed request",
    );

    // High-S: the malleated twin of a valid signature.
    let h = signer.sign_at(
        methods::ANNOUNCE_ROUND,
        &body_hash(&msg),
        unix_now(),
        &nonce(),
    );
    let raw = hex::decode(&h.signature).expect("hex");
    let sig = Signature::from_slice(&raw[..64]).expect("sig");
    let (r, s) = sig.split_scalars();
    let high = Signature::from_scalars(r.to_bytes(), (-*s).to_bytes()).expect("high");
    let mut bytes = high.to_bytes().to_vec();
    bytes.push(raw[64] ^ 1);
    let h = SignedHeaders {
        signature: hex::encode(bytes),
        ..h
    };
    expect_refused(announce_with(&mut client, msg.clone(), &h).await, "high-S");

    // Missing signature headers.
    let r = client
        .announce_round(tonic::Request::new(msg.clone()))
        .await
        .map(|_| ());
    expect_refused(r, "missing or unreadable signature header");

    // A streamed push whose payload does not match the signed hash.
    let h = signer.sign(methods::PUSH_GRADIENT, &sha256_hex(b"something else"));
    let chunks =
        magnet_p2p::service::gradient_chunks(8, &me, Bytes::from_static(b"gradient bytes"));
    let mut req = tonic::Request::new(tokio_stream::iter(chunks));
    h.insert_into(req.metadata_mut()).expect("headers");
    let status = client.push_gradient(req).await.expect_err("mismatch");
    assert!(
        status.message().contains("body hash mismatch"),
        "{status:?}"
    );
    assert!(service.gradient(8, &me).is_none());

    handle.shutdown().await;
}

#[tokio::test]
async fn cluster_mode_refuses_a_wrong_hmac_secret() {
    let secret = AuthMode::Cluster(Arc::new(b"the cluster secret".to_vec()));
    let server = node(secret.clone());
    let good = node(secret);
    let bad = node(AuthMode::Cluster(Arc::new(b"a guessed secret".to_vec())));
    let (handle, _service) = serve_p2p(&server.id, "127.0.0.72:0", "trainer", 1 << 20)
        .await
        .expect("serve");
    let addr = handle.addr.to_string();

    let mut client = good.id.p2p_client(&addr).await.expect("connect");
    let msg = announcement(good.id.signer.node_id(), 1);
    client
        .announce_round(
            good.id
                .signer
                .request(methods::ANNOUNCE_ROUND, msg)
                .expect("sign"),
        )
        .await
        .expect("ok");

    let mut client = bad.id.p2p_client(&addr).await.expect("connect");
    let msg = announcement(bad.id.signer.node_id(), 1);
    let r = client
        .announce_round(
            bad.id
                .signer
                .request(methods::ANNOUNCE_ROUND, msg)
                .expect("sign"),
        )
        .await;
    expect_refused(r.map(|_| ()), "HMAC mismatch");
    handle.shutdown().await;
}

#[tokio::test]
async fn a_changed_certificate_after_pinning_is_a_hard_failure() {
    let client_node = node(AuthMode::Wallet);
    let first = node(AuthMode::Wallet);
    let (handle, _) = serve_p2p(&first.id, "127.0.0.73:0", "trainer", 1 << 20)
        .await
        .expect("serve");
    let addr = handle.addr.to_string();
    let mut client = client_node
        .id
        .p2p_client(&addr)
        .await
        .expect("first contact");
    let hb = HeartbeatRequest {
        self_info: None,
        known_peers: vec![],
    };
    client
        .heartbeat(
            client_node
                .id
                .signer
                .request(methods::HEARTBEAT, hb.clone())
                .expect("sign"),
        )
        .await
        .expect("ok");
    // Reconnecting to the same certificate is fine.
    client_node
        .id
        .p2p_client(&addr)
        .await
        .expect("same certificate");
    handle.shutdown().await;
    drop(client);

    // Another node (another self-signed certificate) takes over the same address.
    let impostor = node(AuthMode::Wallet);
    let mut bound = None;
    for _ in 0..50 {
        match serve_p2p(&impostor.id, &addr, "trainer", 1 << 20).await {
            Ok(h) => {
                bound = Some(h);
                break;
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
    let (handle, _) = bound.expect("rebind the same address");
    let err = client_node
        .id
        .p2p_client(&addr)
        .await
        .expect_err("changed certificate must fail");
    let msg = format!("{err:#}");
    assert!(
        msg.contains("TLS certificate of peer") && msg.contains("changed"),
        "{msg}"
    );
    handle.shutdown().await;
}

#[tokio::test]
async fn plaintext_and_tls12_clients_are_refused() {
    let server = node(AuthMode::Wallet);
    let (handle, _) = serve_p2p(&server.id, "127.0.0.74:0", "trainer", 1 << 20)
        .await
        .expect("serve");
    let addr = handle.addr;

    // Plaintext gRPC (h2c) to the TLS port: the TLS handshake fails, no RPC is served.
    let plain = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .expect("endpoint")
        .connect_timeout(Duration::from_secs(3))
        .timeout(Duration::from_secs(3));
    let outcome = match plain.connect().await {
        Err(e) => Err(e.to_string()),
        Ok(ch) => {
            let mut c = P2pClient::new(ch);
            c.heartbeat(HeartbeatRequest::default())
                .await
                .map(|_| ())
                .map_err(|s| s.to_string())
        }
    };
    assert!(outcome.is_err(), "plaintext client must be refused");

    // A TLS 1.2-only client (accepting any certificate): the server refuses the version.
    #[derive(Debug)]
    struct AcceptAny(Arc<rustls::crypto::CryptoProvider>);
    impl rustls::client::danger::ServerCertVerifier for AcceptAny {
        fn verify_server_cert(
            &self,
            _: &rustls::pki_types::CertificateDer<'_>,
            _: &[rustls::pki_types::CertificateDer<'_>],
            _: &rustls::pki_types::ServerName<'_>,
            _: &[u8],
            _: rustls::pki_types::UnixTime,
        ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
            Ok(rustls::client::danger::ServerCertVerified::assertion())
        }
        fn verify_tls12_signature(
            &self,
            m: &[u8],
            c: &rustls::pki_types::CertificateDer<'_>,
            d: &rustls::DigitallySignedStruct,
        ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
            rustls::crypto::verify_tls12_signature(
                m,
                c,
                d,
                &self.0.signature_verification_algorithms,
            )
        }
        fn verify_tls13_signature(
            &self,
            m: &[u8],
            c: &rustls::pki_types::CertificateDer<'_>,
            d: &rustls::DigitallySignedStruct,
        ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
            rustls::crypto::verify_tls13_signature(
                m,
                c,
                d,
                &self.0.signature_verification_algorithms,
            )
        }
        fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
            self.0.signature_verification_algorithms.supported_schemes()
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let cfg = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS12])
        .expect("tls12")
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AcceptAny(provider)))
        .with_no_client_auth();
    let tcp = tokio::net::TcpStream::connect(addr).await.expect("tcp");
    let name = rustls::pki_types::ServerName::try_from("localhost").expect("name");
    let err = tokio_rustls::TlsConnector::from(Arc::new(cfg))
        .connect(name, tcp)
        .await
        .expect_err("TLS 1.2 refused");
    let msg = err.to_string();
    assert!(
        msg.contains("ProtocolVersion") || msg.to_lowercase().contains("version"),
        "{msg}"
    );
    handle.shutdown().await;
}

#[tokio::test]
async fn ca_signed_certificates_replace_pinning() {
    use magnet_p2p::tls::{PeerTrust, TlsIdentity};
    let dir = tempfile::tempdir().expect("tempdir");
    let write = |name: &str, pem: String| {
        let p = dir.path().join(name);
        std::fs::write(&p, pem).expect("write pem");
        p
    };
    let make_ca = || {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let key = rcgen::KeyPair::generate().expect("key");
        let cert = params.self_signed(&key).expect("ca");
        (cert, key)
    };
    let (ca, ca_key) = make_ca();
    let (other_ca, _) = make_ca();
    let leaf_key = rcgen::KeyPair::generate().expect("key");
    let leaf = rcgen::CertificateParams::new(vec!["127.0.0.76".to_string()])
        .expect("params")
        .signed_by(&leaf_key, &ca, &ca_key)
        .expect("leaf");
    let cert_path = write("node.pem", leaf.pem());
    let key_path = write("node.key", leaf_key.serialize_pem());
    let ca_path = write("ca.pem", ca.pem());
    let other_ca_path = write("other-ca.pem", other_ca.pem());

    let mut server = node(AuthMode::Wallet);
    server.id.tls =
        Arc::new(TlsIdentity::from_pem_files(&cert_path, &key_path).expect("load CA-signed cert"));
    let (handle, _) = serve_p2p(&server.id, "127.0.0.76:0", "trainer", 1 << 20)
        .await
        .expect("serve");
    let addr = handle.addr.to_string();

    let mut client_node = node(AuthMode::Wallet);
    client_node.id.trust = PeerTrust::ca_from_pem(&ca_path).expect("ca");
    let mut client = client_node
        .id
        .p2p_client(&addr)
        .await
        .expect("CA-verified connection");
    let hb = HeartbeatRequest::default();
    client
        .heartbeat(
            client_node
                .id
                .signer
                .request(methods::HEARTBEAT, hb)
                .expect("sign"),
        )
        .await
        .expect("rpc");

    client_node.id.trust = PeerTrust::ca_from_pem(&other_ca_path).expect("other ca");
    let err = client_node
        .id
        .p2p_client(&addr)
        .await
        .expect_err("unknown CA must fail");
    // Same (empty) issuer name, different key: the chain does not verify.
    assert!(
        format!("{err:#}").contains("invalid peer certificate"),
        "{err:#}"
    );
    handle.shutdown().await;
}
