//! A single pass over a JSON object that finds the byte span of each top-level member's value
//! without building a tree, so one field can be replaced in place and every other byte travels
//! as the client sent it. The provider filter rewrites `model` (and `stream_options`) this way
//! on every attempt: no map of the object is built and nothing else is re-encoded.
//!
//! The scanner checks UTF-8 and the structure (strings, nesting, separators) but not everything
//! a full parser checks (number syntax, escapes, control characters in strings): it answers
//! `None` on anything it does not
//! understand, and callers then fall back to a full parse, which reports the error. The
//! gateway filter has already validated the body with serde before any attempt is planned.

use std::ops::Range;

/// One top-level member: its key as written (without quotes; `None` when it has escapes, so
/// it cannot be compared byte for byte) and the span of its value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member<'a> {
    pub key: Option<&'a [u8]>,
    pub value: Range<usize>,
}

/// The members of `body`, which must be one JSON object (surrounding whitespace allowed), and
/// the offset of its closing brace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Members<'a> {
    pub members: Vec<Member<'a>>,
    pub close: usize,
}

impl<'a> Members<'a> {
    /// The value span of the member named `key`; `Err(())` when the name appears more than once
    /// or some key has escapes (it might spell the same name).
    #[allow(clippy::result_unit_err)]
    pub fn get(&self, key: &str) -> Result<Option<Range<usize>>, ()> {
        let mut found = None;
        for m in &self.members {
            match m.key {
                None => return Err(()),
                Some(k) if k == key.as_bytes() => {
                    if found.is_some() {
                        return Err(());
                    }
                    found = Some(m.value.clone());
                }
                Some(_) => {}
            }
        }
        Ok(found)
    }
}

/// Nesting deeper than this is refused (the full parser's limit is 128 too).
const MAX_DEPTH: usize = 128;

pub fn scan(body: &[u8]) -> Option<Members<'_>> {
    std::str::from_utf8(body).ok()?;
    let mut s = Scanner { b: body, i: 0 };
    s.ws();
    s.expect(b'{')?;
    let mut members = Vec::new();
    s.ws();
    if s.peek()? == b'}' {
        let close = s.i;
        s.i += 1;
        return s.end().then_some(Members { members, close });
    }
    loop {
        s.ws();
        let (key, escaped) = s.string()?;
        s.ws();
        s.expect(b':')?;
        s.ws();
        let start = s.i;
        s.value()?;
        members.push(Member { key: (!escaped).then_some(key), value: start..s.i });
        s.ws();
        match s.next()? {
            b',' => continue,
            b'}' => {
                let close = s.i - 1;
                return s.end().then_some(Members { members, close });
            }
            _ => return None,
        }
    }
}

struct Scanner<'a> {
    b: &'a [u8],
    i: usize,
}

impl<'a> Scanner<'a> {
    fn peek(&self) -> Option<u8> {
        self.b.get(self.i).copied()
    }

    fn next(&mut self) -> Option<u8> {
        let c = self.peek()?;
        self.i += 1;
        Some(c)
    }

    fn expect(&mut self, c: u8) -> Option<()> {
        (self.next()? == c).then_some(())
    }

    fn ws(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t' | b'\n' | b'\r')) {
            self.i += 1;
        }
    }

    /// Only whitespace is left.
    fn end(&mut self) -> bool {
        self.ws();
        self.i == self.b.len()
    }

    /// A string starting at `"`: its raw contents, and whether they hold an escape.
    fn string(&mut self) -> Option<(&'a [u8], bool)> {
        self.expect(b'"')?;
        let start = self.i;
        let mut escaped = false;
        loop {
            // Most of a body is string contents: jump to the next quote or backslash, several
            // bytes at a time. (Control characters inside strings are not looked for: the
            // gateway filter's full parse has refused them before any attempt.)
            let rest = self.b.get(self.i..)?;
            self.i += memchr::memchr2(b'"', b'\\', rest)?;
            match self.next()? {
                b'"' => return Some((&self.b[start..self.i - 1], escaped)),
                _ => {
                    escaped = true;
                    self.next()?;
                }
            }
        }
    }

    /// Any value, nested ones included (iteratively: no recursion on client input).
    fn value(&mut self) -> Option<()> {
        // Open containers; true for an object (whose members have keys).
        let mut stack: Vec<bool> = Vec::new();
        loop {
            self.ws();
            match self.peek()? {
                b'"' => {
                    self.string()?;
                }
                b'{' | b'[' => {
                    let object = self.next()? == b'{';
                    if stack.len() >= MAX_DEPTH {
                        return None;
                    }
                    self.ws();
                    let close = if object { b'}' } else { b']' };
                    if self.peek()? == close {
                        self.i += 1;
                    } else {
                        stack.push(object);
                        if object {
                            self.member_key()?;
                        }
                        continue;
                    }
                }
                b'-' | b'0'..=b'9' | b't' | b'f' | b'n' => {
                    let start = self.i;
                    while matches!(self.peek(), Some(b'-' | b'+' | b'.' | b'0'..=b'9' | b'a'..=b'z' | b'E')) {
                        self.i += 1;
                    }
                    let token = &self.b[start..self.i];
                    let literal = matches!(token, b"true" | b"false" | b"null");
                    if !literal && !token.iter().all(|c| matches!(c, b'-' | b'+' | b'.' | b'0'..=b'9' | b'e' | b'E')) {
                        return None;
                    }
                }
                _ => return None,
            }
            // After a value: close containers or move to the next element.
            loop {
                let Some(&object) = stack.last() else { return Some(()) };
                self.ws();
                match self.next()? {
                    b',' => {
                        if object {
                            self.member_key()?;
                        }
                        break;
                    }
                    b'}' if object => {
                        stack.pop();
                    }
                    b']' if !object => {
                        stack.pop();
                    }
                    _ => return None,
                }
            }
        }
    }

    /// `"key":` inside a nested object.
    fn member_key(&mut self) -> Option<()> {
        self.ws();
        self.string()?;
        self.ws();
        self.expect(b':')
    }
}

/// Applies non-overlapping `(span, replacement)` edits, in any order, to `body`.
pub fn splice(body: &[u8], mut edits: Vec<(Range<usize>, Vec<u8>)>) -> Vec<u8> {
    edits.sort_by_key(|(r, _)| r.start);
    let extra: usize = edits.iter().map(|(_, v)| v.len()).sum();
    let mut out = Vec::with_capacity(body.len() + extra);
    let mut at = 0;
    for (range, value) in edits {
        let start = range.start.clamp(at, body.len());
        out.extend_from_slice(&body[at..start]);
        out.extend_from_slice(&value);
        at = range.end.clamp(start, body.len());
    }
    out.extend_from_slice(&body[at..]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(body: &str) -> Option<Vec<(String, String)>> {
        let m = scan(body.as_bytes())?;
        Some(
            m.members
                .iter()
                .map(|m| {
                    let k = m.key.map(|k| String::from_utf8_lossy(k).into_owned()).unwrap_or_else(|| "<esc>".into());
                    (k, body[m.value.clone()].to_owned())
                })
                .collect(),
        )
    }

    #[test]
    fn finds_every_top_level_value_span() {
        let body = r#" {"model" : "a\"b", "n":-1.5e+3,"t":true,"o":{"model":"inner","x":[1,{"y":[]},"]"]},"e":{}, "a":[] ,"z":null} "#;
        let got = keys(body).unwrap();
        let want = [
            ("model", r#""a\"b""#),
            ("n", "-1.5e+3"),
            ("t", "true"),
            ("o", r#"{"model":"inner","x":[1,{"y":[]},"]"]}"#),
            ("e", "{}"),
            ("a", "[]"),
            ("z", "null"),
        ];
        assert_eq!(got, want.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect::<Vec<_>>());
        let m = scan(body.as_bytes()).unwrap();
        assert_eq!(&body[m.close..m.close + 1], "}");
        assert_eq!(m.get("model").unwrap().map(|r| &body[r]), Some(r#""a\"b""#));
        assert_eq!(m.get("nope").unwrap(), None);
        assert_eq!(keys("{}").unwrap(), vec![]);
    }

    #[test]
    fn duplicate_or_escaped_keys_are_ambiguous() {
        let dup = scan(br#"{"model":"a","model":"b"}"#).unwrap();
        assert!(dup.get("model").is_err());
        let esc = scan(br#"{"mod\u0065l":"a"}"#).unwrap();
        assert!(esc.get("model").is_err());
    }

    #[test]
    fn refuses_what_is_not_one_object() {
        for bad in [
            "", "[]", "1", "\"s\"", "{", "{\"a\"}", "{\"a\":}", "{\"a\":1,}", "{\"a\":1 \"b\":2}", "{\"a\":[1,]}",
            "{\"a\":[1}", "{\"a\":{\"b\"}}", "{\"a\":1}x", "{\"a\":1}{}", "{\"a\":@}",
            "{\"a\":tru e}", "{\"a\":[1 2]}", "{\"a\":{\"b\":1,}}",
        ] {
            assert!(scan(bad.as_bytes()).is_none(), "{bad:?} must be refused");
        }
        for bad in [&b"{\"a\":\"\xff\"}"[..], b"{\"\xc3\":1}"] {
            assert!(scan(bad).is_none(), "{bad:?} must be refused");
        }
        let deep = format!("{{\"a\":{}{}}}", "[".repeat(200), "]".repeat(200));
        assert!(scan(deep.as_bytes()).is_none());
    }

    proptest::proptest! {
        /// Never panics on near-JSON input, and accepts every object serde accepts.
        #[test]
        fn never_panics_and_accepts_every_object(body in "[{}\\[\\]\",:a-c0-9. \\\\ntrue]{0,40}") {
            let scanned = scan(body.as_bytes());
            if serde_json::from_str::<serde_json::Map<String, serde_json::Value>>(&body).is_ok() {
                proptest::prop_assert!(scanned.is_some(), "{:?} is an object", body);
            }
        }
    }

    #[test]
    fn splices_in_any_order() {
        let body = br#"{"a":1,"b":2}"#;
        let out = splice(body, vec![(11..12, b"\"two\"".to_vec()), (5..6, b"[1]".to_vec()), (12..12, b",\"c\":3".to_vec())]);
        assert_eq!(out, br#"{"a":[1],"b":"two","c":3}"#);
    }
}
