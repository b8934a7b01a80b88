//! `tollgate-wasm-strip FILE.wasm NAME...`: removes the named exports from FILE in place
//! (names already absent are fine: the file may have been stripped by an earlier build).

use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some((path, names)) = args.split_first() else {
        eprintln!("usage: tollgate-wasm-strip FILE.wasm EXPORT...");
        return ExitCode::from(2);
    };
    match run(path, names) {
        Ok(removed) => {
            println!("{path}: {removed} callback export(s) removed");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("tollgate-wasm-strip: {path}: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(path: &str, names: &[String]) -> Result<usize, Box<dyn std::error::Error>> {
    let module = std::fs::read(path)?;
    let present = tollgate_wasm_strip::export_names(&module)?;
    let remove: Vec<&str> = names.iter().map(String::as_str).filter(|n| present.iter().any(|p| p == n)).collect();
    if remove.is_empty() {
        return Ok(0);
    }
    let out = tollgate_wasm_strip::strip_exports(&module, &remove)?;
    let tmp = format!("{path}.tmp");
    std::fs::write(&tmp, out)?;
    std::fs::rename(&tmp, path)?;
    Ok(remove.len())
}
