//! `nines-demo-backend --port P [--name N]`: the demo backend as its own
//! small binary, for tests that kill and restart backend processes. Prints
//! `listening 127.0.0.1:PORT` on stdout once it accepts connections.

use std::io::Write;
use std::net::SocketAddr;

fn main() -> std::io::Result<()> {
    let mut port: u16 = 0;
    let mut name = String::from("backend");
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match (arg.as_str(), args.next()) {
            ("--port", Some(value)) => {
                port = value
                    .parse()
                    .map_err(|_| std::io::Error::other("bad --port"))?
            }
            ("--name", Some(value)) => name = value,
            _ => {
                return Err(std::io::Error::other(
                    "usage: nines-demo-backend --port P [--name N]",
                ))
            }
        }
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let listener = nines_gateway::server::bind(SocketAddr::from(([127, 0, 0, 1], port)))?;
        let mut stdout = std::io::stdout();
        writeln!(stdout, "listening {}", listener.local_addr()?)?;
        stdout.flush()?;
        nines_gateway::demo::DemoBackend::new(&name)
            .serve(listener)
            .await;
        Ok(())
    })
}
