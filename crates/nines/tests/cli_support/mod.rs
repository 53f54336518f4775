//! Shared helpers of the process tests that drive the `nines` command line
//! (this build's binary) and read what it printed.

#![allow(dead_code)]

use std::path::Path;
use std::process::{Command, Output, Stdio};

/// Path of the `nines` binary under test.
pub fn exe() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_nines"))
}

/// Runs `nines ARGS` to completion, with no stdin.
pub fn nines(args: &[&str]) -> Output {
    Command::new(exe())
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("nines runs")
}

/// Output bytes as text.
pub fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}
