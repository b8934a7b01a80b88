//! Replays the checked-in corpus (`fuzz/corpus/<target>/*`) through every fuzz target: the CI
//! gate for the fuzzers' findings (`cargo test --workspace`, so `make unit`), no fuzzer needed.
//!
//! It also checks the memory half of the catalogue's amplification bar (SECURITY-CATALOGUE 4(c)
//! item 6): the heap a target reaches on an input, above what was live before, is at most
//! 100 × the input plus a fixed allowance for per-call setup (decoders, config, error strings).
//! One test, so nothing else allocates on another thread while it measures.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::PathBuf;
use std::time::Instant;

use peak_alloc::PeakAlloc;

#[global_allocator]
static HEAP: PeakAlloc = PeakAlloc;

/// Heap a target may use beyond 100 × its input, whatever the input.
const FIXED_ALLOWANCE: usize = 256 * 1024;

/// The checked-in corpus of a target, plus `$TOLLGATE_FUZZ_EXTRA_CORPUS/<target>` when set (the
/// inputs `make fuzz` kept in target/fuzz/corpus: thousands, to measure on, not to check in).
fn corpus(name: &str) -> Vec<(PathBuf, Vec<u8>)> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("corpus").join(name);
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e} (every target has a seed corpus)", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file())
        .collect();
    if let Some(extra) = std::env::var_os("TOLLGATE_FUZZ_EXTRA_CORPUS") {
        if let Ok(entries) = std::fs::read_dir(PathBuf::from(extra).join(name)) {
            files.extend(entries.map(|e| e.unwrap().path()).filter(|p| p.is_file()));
        }
    }
    files.sort();
    files.into_iter().map(|p| (p.clone(), std::fs::read(&p).unwrap())).collect()
}

fn peak_heap(run: fn(&[u8]), data: &[u8]) -> usize {
    let before = HEAP.current_usage();
    HEAP.reset_peak_usage();
    run(data);
    HEAP.peak_usage().saturating_sub(before)
}

#[test]
fn corpus_replays_within_memory_bounds() {
    let mut report = Vec::new();
    for t in tollgate_fuzz::TARGETS {
        let files = corpus(t.name);
        assert!(!files.is_empty(), "{}: empty corpus", t.name);
        // (peak heap per input byte, peak, file): the worst ratio among inputs of 256 bytes or
        // more (below that the fixed cost of a call, an error string, dominates any ratio).
        let mut worst = (0f64, 0usize, String::new());
        let mut largest_peak = 0usize;
        for (path, data) in &files {
            let peak = peak_heap(t.run, data);
            let bound = 100 * data.len() + FIXED_ALLOWANCE;
            assert!(peak <= bound, "{}: {} used {peak} heap bytes for {} input bytes", t.name, path.display(), data.len());
            largest_peak = largest_peak.max(peak);
            let ratio = peak as f64 / data.len().max(1) as f64;
            if data.len() >= 256 && ratio >= worst.0 {
                worst = (ratio, peak, path.file_name().unwrap().to_string_lossy().into());
            }
        }
        report.push(format!(
            "{:<20} {:>5} inputs, largest peak heap {:>7} B, worst on >= 256 B inputs {:>5.1} x input ({} B, {})",
            t.name,
            files.len(),
            largest_peak,
            worst.0,
            worst.1,
            worst.2
        ));
    }
    eprintln!("{}", report.join("\n"));
}

/// The CPU half of the amplification bar, as a report (not a gate: timings vary by machine):
/// for each target, the nanoseconds per input byte of the slowest input of 256 bytes or more,
/// against the median of the seeds (the fixtures: valid requests and streams). Below 256 bytes
/// the fixed cost of a call swamps any per-byte figure.
/// `TOLLGATE_FUZZ_EXTRA_CORPUS=target/fuzz/corpus cargo test -p tollgate-fuzz --profile fuzz
/// --test replay -- --ignored --nocapture cpu_report`
#[test]
#[ignore]
fn cpu_report() {
    for t in tollgate_fuzz::TARGETS {
        let timed: Vec<(f64, usize, String)> = corpus(t.name)
            .iter()
            .filter(|(_, data)| data.len() >= 256)
            .map(|(path, data)| {
                let rounds = 20;
                let start = Instant::now();
                for _ in 0..rounds {
                    (t.run)(data);
                }
                let ns = start.elapsed().as_nanos() as f64 / f64::from(rounds);
                (ns / data.len() as f64, data.len(), path.file_name().unwrap().to_string_lossy().into())
            })
            .collect();
        let mut seeds: Vec<f64> = timed.iter().filter(|x| x.2.starts_with("seed-")).map(|x| x.0).collect();
        seeds.sort_by(f64::total_cmp);
        let Some(&median) = seeds.get(seeds.len() / 2) else {
            eprintln!("{:<20} no seed of 256 bytes or more", t.name);
            continue;
        };
        let Some((max, len, name)) = timed.iter().max_by(|a, b| a.0.total_cmp(&b.0)) else { continue };
        eprintln!(
            "{:<20} seeds median {median:>6.1} ns/B; slowest {max:>7.1} ns/B ({:.1}x, {len} B, {name})",
            t.name,
            max / median
        );
    }
}
