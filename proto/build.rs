fn main() -> std::io::Result<()> {
    let protos = ["magnet/chain/v1/types.proto"];
    for p in protos {
        println!("cargo:rerun-if-changed={p}");
    }
    prost_build::Config::new().compile_protos(&protos, &["."])
}
