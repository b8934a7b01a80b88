//! The libFuzzer driver: `TOLLGATE_FUZZ_TARGET=<name> tollgate-fuzz [libFuzzer flags] corpus/`.
//! Built only by `make fuzz` (feature `libfuzzer`, sancov RUSTFLAGS); see the crate docs.
#![no_main]

use std::sync::OnceLock;

static TARGET: OnceLock<fn(&[u8])> = OnceLock::new();

fn selected() -> fn(&[u8]) {
    *TARGET.get_or_init(|| {
        let name = std::env::var("TOLLGATE_FUZZ_TARGET").unwrap_or_default();
        match tollgate_fuzz::target(&name) {
            Some(t) => t.run,
            None => {
                let names: Vec<&str> = tollgate_fuzz::TARGETS.iter().map(|t| t.name).collect();
                eprintln!("set TOLLGATE_FUZZ_TARGET to one of: {}", names.join(" "));
                std::process::exit(2)
            }
        }
    })
}

libfuzzer_sys::fuzz_target!(|data: &[u8]| selected()(data));
