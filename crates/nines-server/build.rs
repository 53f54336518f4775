//! Compiles etcd's v3 API definitions with protox, so no system protoc is needed.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    for f in ["proto/kv.proto", "proto/rpc.proto"] {
        println!("cargo:rerun-if-changed={f}");
    }
    let fds = protox::compile(["kv.proto", "rpc.proto"], ["proto"])?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .compile_fds(fds)?;
    Ok(())
}
