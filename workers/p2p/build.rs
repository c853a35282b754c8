//! Compiles `proto/magnet/p2p/v1/p2p.proto` into tonic clients and servers.
fn main() -> std::io::Result<()> {
    let proto = "../../proto/magnet/p2p/v1/p2p.proto";
    println!("cargo:rerun-if-changed={proto}");
    tonic_build::configure()
        .build_server(true)
        .build_client(true)
        // Payloads (shards, gradient chunks) as `bytes::Bytes`: slicing without copies.
        .bytes(["."])
        .compile_protos(&[proto], &["../../proto"])
}
