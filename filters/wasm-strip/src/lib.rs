//! Removes named exports from a WebAssembly module, leaving every other byte as it was.
//!
//! Why: the proxy-wasm Rust SDK exports every callback of the ABI (`proxy_on_response_body`,
//! `proxy_on_log`, `proxy_on_done`...) whether the filter implements it or not, and Envoy's
//! wasm host (proxy-wasm-cpp-host `ContextBase::onResponseBody` and the like) enters the VM for
//! every callback the module exports. A filter that only looks at requests still pays a VM
//! entry for each response-headers, response-body, log and done event. A callback that is not
//! exported is skipped by the host without entering the VM, which is what this tool arranges.
//!
//! Only the export section changes: functions stay where they are (their indices are
//! unchanged), so the module stays valid; the now-unexported SDK glue is dead code.

use thiserror::Error;

#[derive(Debug, Error, PartialEq, Eq)]
pub enum StripError {
    #[error("not a WebAssembly module (bad magic or version)")]
    NotWasm,
    #[error("the module is truncated or malformed at byte {0}")]
    Malformed(usize),
    #[error("the module has no export named `{0}` (did the proxy-wasm SDK change?)")]
    MissingExport(String),
}

const MAGIC_VERSION: [u8; 8] = [0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00];
const EXPORT_SECTION: u8 = 7;

/// A cursor over module bytes that knows its absolute offset, for error messages.
struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
    base: usize,
}

impl<'a> Reader<'a> {
    fn new(bytes: &'a [u8], base: usize) -> Self {
        Self { bytes, pos: 0, base }
    }

    fn done(&self) -> bool {
        self.pos >= self.bytes.len()
    }

    fn err(&self) -> StripError {
        StripError::Malformed(self.base + self.pos)
    }

    fn byte(&mut self) -> Result<u8, StripError> {
        let b = *self.bytes.get(self.pos).ok_or_else(|| self.err())?;
        self.pos += 1;
        Ok(b)
    }

    fn u32(&mut self) -> Result<u32, StripError> {
        let mut value: u32 = 0;
        for shift in (0..35).step_by(7) {
            let b = self.byte()?;
            value |= u32::from(b & 0x7f).checked_shl(shift).ok_or_else(|| self.err())?;
            if b & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err(self.err())
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], StripError> {
        let end = self.pos.checked_add(n).filter(|&e| e <= self.bytes.len()).ok_or_else(|| self.err())?;
        let s = &self.bytes[self.pos..end];
        self.pos = end;
        Ok(s)
    }
}

fn write_u32(out: &mut Vec<u8>, mut v: u32) {
    loop {
        let b = (v & 0x7f) as u8;
        v >>= 7;
        if v == 0 {
            out.push(b);
            return;
        }
        out.push(b | 0x80);
    }
}

/// Returns `module` without the exports named in `remove`. Every name must be exported.
pub fn strip_exports(module: &[u8], remove: &[&str]) -> Result<Vec<u8>, StripError> {
    if module.get(..8) != Some(&MAGIC_VERSION[..]) {
        return Err(StripError::NotWasm);
    }
    let mut found = vec![false; remove.len()];
    let mut out = Vec::with_capacity(module.len());
    out.extend_from_slice(&MAGIC_VERSION);
    let mut r = Reader::new(&module[8..], 8);
    while !r.done() {
        let id = r.byte()?;
        let size = r.u32()? as usize;
        let start = r.base + r.pos;
        let contents = r.take(size)?;
        let contents = if id == EXPORT_SECTION {
            filter_exports(contents, start, remove, &mut found)?
        } else {
            contents.to_vec()
        };
        out.push(id);
        write_u32(&mut out, u32::try_from(contents.len()).map_err(|_| StripError::Malformed(start))?);
        out.extend_from_slice(&contents);
    }
    if let Some(i) = found.iter().position(|f| !f) {
        return Err(StripError::MissingExport(remove[i].to_owned()));
    }
    Ok(out)
}

/// Re-encodes an export section without the removed names.
fn filter_exports(section: &[u8], base: usize, remove: &[&str], found: &mut [bool]) -> Result<Vec<u8>, StripError> {
    let mut r = Reader::new(section, base);
    let count = r.u32()?;
    let mut kept: Vec<&[u8]> = Vec::new();
    for _ in 0..count {
        let entry_start = r.pos;
        let name_len = r.u32()? as usize;
        let name = r.take(name_len)?;
        let _kind = r.byte()?;
        let _index = r.u32()?;
        match remove.iter().position(|n| n.as_bytes() == name) {
            Some(i) => found[i] = true,
            None => kept.push(&section[entry_start..r.pos]),
        }
    }
    if !r.done() {
        return Err(r.err());
    }
    let mut out = Vec::with_capacity(section.len());
    write_u32(&mut out, u32::try_from(kept.len()).map_err(|_| StripError::Malformed(base))?);
    for entry in kept {
        out.extend_from_slice(entry);
    }
    Ok(out)
}

/// The exports a module has, in order (for checks and tests).
pub fn export_names(module: &[u8]) -> Result<Vec<String>, StripError> {
    if module.get(..8) != Some(&MAGIC_VERSION[..]) {
        return Err(StripError::NotWasm);
    }
    let mut r = Reader::new(&module[8..], 8);
    let mut names = Vec::new();
    while !r.done() {
        let id = r.byte()?;
        let size = r.u32()? as usize;
        let start = r.base + r.pos;
        let contents = r.take(size)?;
        if id == EXPORT_SECTION {
            let mut e = Reader::new(contents, start);
            for _ in 0..e.u32()? {
                let len = e.u32()? as usize;
                names.push(String::from_utf8_lossy(e.take(len)?).into_owned());
                e.byte()?;
                e.u32()?;
            }
        }
    }
    Ok(names)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A module with one function type, three functions and three exports (hand-assembled).
    fn module() -> Vec<u8> {
        let mut m = MAGIC_VERSION.to_vec();
        // type section: 1 type, () -> ()
        m.extend([1, 4, 1, 0x60, 0, 0]);
        // function section: 3 functions of type 0
        m.extend([3, 4, 3, 0, 0, 0]);
        // export section
        let mut exports = vec![3u8];
        for (i, name) in ["keep_me", "drop_a", "drop_b"].iter().enumerate() {
            exports.push(name.len() as u8);
            exports.extend(name.as_bytes());
            exports.extend([0, i as u8]);
        }
        m.push(7);
        m.push(exports.len() as u8);
        m.extend(exports);
        // code section: 3 empty bodies (no locals, `end`)
        m.extend([10, 10, 3, 2, 0, 0x0b, 2, 0, 0x0b, 2, 0, 0x0b]);
        m
    }

    #[test]
    fn removes_only_the_named_exports() {
        let m = module();
        assert_eq!(export_names(&m).unwrap(), ["keep_me", "drop_a", "drop_b"]);
        let out = strip_exports(&m, &["drop_a", "drop_b"]).unwrap();
        assert_eq!(export_names(&out).unwrap(), ["keep_me"]);
        // Every other section is byte for byte the same.
        assert!(out.ends_with(&[10, 10, 3, 2, 0, 0x0b, 2, 0, 0x0b, 2, 0, 0x0b]));
        assert!(out.starts_with(&m[..20]));
        // Idempotent once nothing is left to remove.
        assert_eq!(strip_exports(&out, &[]).unwrap(), out);
    }

    #[test]
    fn refuses_a_missing_export_and_bad_input() {
        let m = module();
        assert_eq!(strip_exports(&m, &["nope"]), Err(StripError::MissingExport("nope".into())));
        assert_eq!(strip_exports(b"\0asm\x02\0\0\0", &[]), Err(StripError::NotWasm));
        // A cut between sections leaves a shorter valid module; any other cut must fail.
        let mut boundaries = vec![8];
        let mut at = 8;
        while at < m.len() {
            at += 2 + m[at + 1] as usize; // id, one-byte size, contents
            boundaries.push(at);
        }
        assert_eq!(boundaries.last(), Some(&m.len()));
        for cut in 9..m.len() {
            let result = strip_exports(&m[..cut], &[]);
            assert_eq!(result.is_ok(), boundaries.contains(&cut), "truncated at {cut}: {result:?}");
        }
        let mut long_leb = m.clone();
        long_leb.extend([0, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01]);
        assert!(matches!(strip_exports(&long_leb, &[]), Err(StripError::Malformed(_))));
    }
}
