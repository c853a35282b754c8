fn main() -> std::io::Result<()> {
    let protos = [
        "magnet/chain/v1/types.proto",
        "magnet/compute/v1/tx.proto",
        "magnet/gov/v1/tx.proto",
    ];
    for p in protos {
        println!("cargo:rerun-if-changed={p}");
    }
    prost_build::Config::new().compile_protos(&protos, &["."])
}
