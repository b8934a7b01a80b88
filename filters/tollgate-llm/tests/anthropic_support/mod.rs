//! Shared helpers of the `anthropic_*` (and `sagemaker_tgi_*`) integration tests: fixture discovery, golden files
//! (`TOLLGATE_UPDATE_GOLDEN=1` rewrites them), stream replay.

#![allow(dead_code)]

use std::fs;
use std::path::{Path, PathBuf};

use tollgate_llm::{StreamTranslator, Usage};

pub fn fixtures(sub: &str) -> PathBuf {
    fixtures_under("anthropic", sub)
}

/// `tests/fixtures/<root>/<sub>` (other pairs reuse these helpers).
pub fn fixtures_under(root: &str, sub: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(root)
        .join(sub)
}

/// `(case name, input path)` for every input file in `dir` ending with `suffix`, sorted.
pub fn cases(dir: &Path, suffix: &str) -> Vec<(String, PathBuf)> {
    let mut out: Vec<(String, PathBuf)> = fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter_map(|p| {
            let name = p.file_name()?.to_str()?.to_owned();
            let case = name.strip_suffix(suffix)?.to_owned();
            (!case.contains('.')).then_some((case, p))
        })
        .collect();
    out.sort();
    assert!(!out.is_empty(), "no fixtures in {}", dir.display());
    out
}

pub fn updating() -> bool {
    std::env::var_os("TOLLGATE_UPDATE_GOLDEN").is_some()
}

/// Compares `actual` with the golden file (or writes it when updating). Returns a failure
/// description instead of panicking, so one run reports every mismatch.
pub fn golden(path: &Path, actual: &str) -> Result<(), String> {
    if updating() {
        fs::write(path, actual).unwrap();
        return Ok(());
    }
    let expected = fs::read_to_string(path).map_err(|e| {
        format!(
            "{}: {e} (run with TOLLGATE_UPDATE_GOLDEN=1 to create it)",
            path.display()
        )
    })?;
    if expected == actual {
        Ok(())
    } else {
        Err(format!(
            "{} differs:\n--- expected\n{expected}\n--- actual\n{actual}",
            path.display()
        ))
    }
}

/// JSON bytes, pretty-printed with sorted keys and a final newline.
pub fn pretty(bytes: &[u8]) -> String {
    let value: serde_json::Value =
        serde_json::from_slice(bytes).expect("translator output is JSON");
    serde_json::to_string_pretty(&value).unwrap() + "\n"
}

pub fn pretty_value(value: &impl serde::Serialize) -> String {
    serde_json::to_string_pretty(value).unwrap() + "\n"
}

pub fn report(failures: Vec<String>) {
    assert!(
        failures.is_empty(),
        "{} golden failure(s):\n\n{}",
        failures.len(),
        failures.join("\n\n")
    );
}

/// Feeds `input` cut at `splits` (sorted positions), then finishes. Returns every byte sent and
/// the last usage reported; checks that usage never goes back to `None` once known.
pub fn replay(
    t: &mut dyn StreamTranslator,
    input: &[u8],
    splits: &[usize],
) -> (Vec<u8>, Option<Usage>) {
    let mut out = Vec::new();
    let mut usage = None;
    let mut start = 0;
    for &cut in splits.iter().chain(std::iter::once(&input.len())) {
        let cut = cut.clamp(start, input.len());
        let o = t.feed(&input[start..cut]).expect("feed");
        assert!(
            !(usage.is_some() && o.usage.is_none()),
            "usage lost mid-stream"
        );
        usage = o.usage.or(usage);
        out.extend(o.bytes);
        start = cut;
    }
    let o = t.finish().expect("finish");
    usage = o.usage.or(usage);
    out.extend(o.bytes);
    (out, usage)
}

pub fn byte_by_byte(t: &mut dyn StreamTranslator, input: &[u8]) -> (Vec<u8>, Option<Usage>) {
    let splits: Vec<usize> = (1..input.len()).collect();
    replay(t, input, &splits)
}
