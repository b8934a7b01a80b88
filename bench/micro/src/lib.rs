//! Criterion benchmarks live in `benches/`; run `cargo bench -p tollgate-micro-bench`.
