//! A protoc stand-in for build scripts (prost-build calls `$PROTOC
//! --include_imports [--include_source_info] -o OUT -I DIR... FILE...`).
//! It compiles the files with protox and writes the descriptor set, so
//! building nines needs no system protoc. Other flags are accepted and
//! ignored; `--version` answers like protoc.

use std::path::PathBuf;
use std::process::ExitCode;

use prost::Message;

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("protoc-shim: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> Result<(), String> {
    let mut args = std::env::args().skip(1);
    let mut includes: Vec<PathBuf> = Vec::new();
    let mut files: Vec<PathBuf> = Vec::new();
    let mut out: Option<PathBuf> = None;
    let mut source_info = false;
    while let Some(a) = args.next() {
        match a.as_str() {
            "--version" => {
                println!("libprotoc 30.0");
                return Ok(());
            }
            "-o" | "--descriptor_set_out" => {
                out = Some(args.next().ok_or("-o needs a path")?.into());
            }
            "-I" | "--proto_path" => includes.push(args.next().ok_or("-I needs a path")?.into()),
            "--include_source_info" => source_info = true,
            s if s.starts_with("--descriptor_set_out=") => {
                out = Some(s["--descriptor_set_out=".len()..].into());
            }
            s if s.starts_with("--proto_path=") => includes.push(s["--proto_path=".len()..].into()),
            s if s.starts_with("-I") => includes.push(s[2..].into()),
            s if s.starts_with("-o") => out = Some(s[2..].into()),
            s if s.starts_with('-') => {}
            file => files.push(file.into()),
        }
    }
    let out = out.ok_or("no -o given")?;
    if includes.is_empty() {
        includes.push(".".into());
    }
    let mut compiler = protox::Compiler::new(&includes).map_err(|e| e.to_string())?;
    compiler.include_imports(true).include_source_info(source_info);
    compiler.open_files(&files).map_err(|e| e.to_string())?;
    let fds = compiler.file_descriptor_set();
    std::fs::write(&out, fds.encode_to_vec()).map_err(|e| format!("cannot write {}: {e}", out.display()))
}
