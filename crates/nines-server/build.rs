//! Compiles etcd's v3 API definitions with protox, so no system protoc is needed.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    for f in [
        "proto/kv.proto",
        "proto/rpc.proto",
        "proto/v3lock.proto",
        "proto/v3election.proto",
    ] {
        println!("cargo:rerun-if-changed={f}");
    }
    let fds = protox::compile(
        ["kv.proto", "rpc.proto", "v3lock.proto", "v3election.proto"],
        ["proto"],
    )?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .compile_fds(fds)?;
    Ok(())
}
