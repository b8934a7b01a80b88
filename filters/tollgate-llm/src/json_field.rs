//! One top-level field of a JSON object, found without parsing the rest: the metering of an
//! answer that passes untouched needs only its `usage`, and parsing the whole answer with serde
//! (every choice, every string unescaped and validated) cost the provider filter about 12,000
//! wasm instructions for a 250-byte chat answer.
//!
//! Strings are skipped with `memchr` (a word at a time); only the bytes between strings are
//! looked at one by one, to track nesting. The value found is handed to serde as a slice, so
//! what it holds is still parsed strictly.

/// The raw value of `key` in the top-level object `body` (the last one if the key is repeated,
/// as JavaScript reads it), or `None` when `body` is not an object or has no such key. A key
/// written with escapes (`"\u0075sage"`) is compared as the parser would decode it. Malformed
/// JSON outside the value is not noticed; inside it, serde refuses the slice.
pub fn top_level<'b>(body: &'b [u8], key: &str) -> Option<&'b [u8]> {
    match last_member(body, key) {
        Found::Value(v) => Some(v),
        // Not there as written, and no escape anywhere that could spell it otherwise.
        Found::Absent if memchr::memchr(b'\\', body).is_none() => None,
        _ => scan(body, key),
    }
}

enum Found<'b> {
    Value(&'b [u8]),
    /// The key's quoted bytes are nowhere in the body.
    Absent,
    /// Found, but not provably the top-level object's: the whole scan decides.
    Unsure,
}

/// The common case, read from the end: providers write `usage` last or nearly (OpenAI's
/// `service_tier` and `system_fingerprint`, Bedrock's `metrics` come after it). The key's last
/// occurrence is taken when it is a key (its quote not escaped, a colon after it) and the object
/// holding it closes at the end of the body: then it is the top-level object's. Anything else
/// (the key absent, escaped, inside a string, nested) is left to [`scan`].
fn last_member<'b>(body: &'b [u8], key: &str) -> Found<'b> {
    let mut quoted = [b'"'; 34];
    let Some(name) = quoted.get_mut(1..=key.len()) else { return Found::Unsure };
    name.copy_from_slice(key.as_bytes());
    let Some(quoted) = quoted.get(..key.len() + 2) else { return Found::Unsure };
    // The last occurrence, searched forwards: `memmem`'s forward search has a vector prefilter
    // and its reverse one does not (about 1,000 wasm instructions against 1,800 for a 150-byte
    // stream chunk).
    let Some(at) = memchr::memmem::find_iter(body, quoted).last() else { return Found::Absent };
    value_closing_at_end(body, at, at + quoted.len()).map_or(Found::Unsure, Found::Value)
}

/// The value of the key quoted in `body[open..after_key]`, if that is a key (its opening quote
/// not escaped, a colon after it) and the object holding it closes at the end of `body`.
fn value_closing_at_end(body: &[u8], open: usize, after_key: usize) -> Option<&[u8]> {
    let backslashes = body.get(..open)?.iter().rev().take_while(|&&b| b == b'\\').count();
    if backslashes % 2 == 1 {
        return None;
    }
    let mut i = after_key;
    while body.get(i).is_some_and(u8::is_ascii_whitespace) {
        i += 1;
    }
    if body.get(i) != Some(&b':') {
        return None;
    }
    let from = i + 1;
    let mut i = from;
    let mut depth = 1usize;
    let mut value_end = None;
    while let Some(&b) = body.get(i) {
        match b {
            b'"' => {
                let end = string_end(body, i + 1)?;
                // After the value, an escaped key could spell it again (and be the one that
                // counts): left to the whole scan.
                if value_end.is_some() && memchr::memchr(b'\\', body.get(i + 1..end)?).is_some() {
                    return None;
                }
                i = end + 1;
                continue;
            }
            b'{' | b'[' => depth += 1,
            b',' if depth == 1 => {
                value_end.get_or_insert(i);
            }
            b'}' | b']' => {
                depth -= 1;
                if depth == 0 {
                    value_end.get_or_insert(i);
                    let rest = body.get(i + 1..)?;
                    return (b == b'}' && rest.iter().all(u8::is_ascii_whitespace))
                        .then(|| body.get(from..value_end?).map(trim))
                        .flatten();
                }
            }
            _ => {}
        }
        i += 1;
    }
    None
}

/// Every byte from the start, tracking nesting.
fn scan<'b>(body: &'b [u8], key: &str) -> Option<&'b [u8]> {
    let start = body.iter().position(|b| !b.is_ascii_whitespace())?;
    if body.get(start) != Some(&b'{') {
        return None;
    }
    let mut depth = 0usize;
    let mut i = start;
    // At depth 1: the last string, while it may still be a key (only whitespace after it).
    let mut last_string: Option<(usize, usize)> = None;
    // The value of a matching key being read: where it starts.
    let mut value_from: Option<usize> = None;
    let mut found = None;
    while let Some(&b) = body.get(i) {
        match b {
            b'"' => {
                let end = string_end(body, i + 1)?;
                last_string = (depth == 1 && value_from.is_none()).then_some((i + 1, end));
                i = end + 1;
                continue;
            }
            b':' if depth == 1 => {
                if let Some((open, close)) = last_string.take() {
                    if body.get(open..close).is_some_and(|name| key_is(name, key)) {
                        value_from = Some(i + 1);
                    }
                }
            }
            b'{' | b'[' => depth += 1,
            b'}' | b']' => {
                if depth == 1 {
                    if let Some(from) = value_from.take() {
                        found = body.get(from..i);
                    }
                    return found.map(trim);
                }
                depth = depth.saturating_sub(1);
            }
            b',' if depth == 1 => {
                if let Some(from) = value_from.take() {
                    found = body.get(from..i);
                }
            }
            _ => {}
        }
        if !b.is_ascii_whitespace() {
            last_string = None;
        }
        i += 1;
    }
    // The object never closed: a value already complete is still good.
    found.map(trim)
}

fn trim(v: &[u8]) -> &[u8] {
    let from = v.iter().position(|b| !b.is_ascii_whitespace()).unwrap_or(v.len());
    let to = v.iter().rposition(|b| !b.is_ascii_whitespace()).map_or(from, |p| p + 1);
    v.get(from..to).unwrap_or_default()
}

/// Whether a key's raw bytes (between its quotes) name `key`.
fn key_is(raw: &[u8], key: &str) -> bool {
    if !raw.contains(&b'\\') {
        return raw == key.as_bytes();
    }
    let mut quoted = Vec::with_capacity(raw.len() + 2);
    quoted.push(b'"');
    quoted.extend_from_slice(raw);
    quoted.push(b'"');
    serde_json::from_slice::<String>(&quoted).is_ok_and(|name| name == key)
}

/// The index of the quote that closes the string whose contents start at `from`.
fn string_end(body: &[u8], mut from: usize) -> Option<usize> {
    loop {
        let at = from + memchr::memchr2(b'"', b'\\', body.get(from..)?)?;
        if body.get(at) == Some(&b'"') {
            return Some(at);
        }
        from = at + 2; // a backslash and the byte it escapes
    }
}

#[cfg(test)]
mod tests {
    use super::top_level;
    use proptest::prelude::*;

    fn field<'b>(body: &'b str, key: &str) -> Option<&'b str> {
        top_level(body.as_bytes(), key).map(|v| std::str::from_utf8(v).unwrap())
    }

    #[test]
    fn finds_the_top_level_value_only() {
        let body = r#"{"id":"x","choices":[{"message":{"content":"say \"usage\": {}","usage":1}}],
            "usage" : {"prompt_tokens": 3, "completion_tokens": 1} }"#;
        assert_eq!(field(body, "usage"), Some(r#"{"prompt_tokens": 3, "completion_tokens": 1}"#));
        assert_eq!(field(body, "id"), Some(r#""x""#));
        assert_eq!(field(r#"{"a":{"usage":1}}"#, "usage"), None);
        assert_eq!(field(r#"{"a":"usage","b":2}"#, "usage"), None);
        assert_eq!(field(r#"{"usage":null}"#, "usage"), Some("null"));
        assert_eq!(field(r#"{"usage":[1,{"x":2}],"z":0}"#, "usage"), Some(r#"[1,{"x":2}]"#));
    }

    #[test]
    fn not_an_object_or_no_key() {
        assert_eq!(field(r#"[{"usage":1}]"#, "usage"), None);
        assert_eq!(field(r#""usage""#, "usage"), None);
        assert_eq!(field("", "usage"), None);
        assert_eq!(field("{}", "usage"), None);
        assert_eq!(field(r#"{"usage""#, "usage"), None);
        assert_eq!(field(r#"{"usage":"#, "usage"), None);
        assert_eq!(field(r#"{"usage":"unterminated"#, "usage"), None);
    }

    #[test]
    fn read_from_the_end_when_the_object_closes_there() {
        // OpenAI's order: fields after `usage`.
        let body = r#"{"id":"c","choices":[],"usage":{"prompt_tokens":3,"x":[1]},"service_tier":"default","system_fingerprint":"fp_{]"}"#;
        assert!(matches!(super::last_member(body.as_bytes(), "usage"), super::Found::Value(v) if v == br#"{"prompt_tokens":3,"x":[1]}"#));
        // The last occurrence is nested, or in a string, or escaped: the whole scan decides.
        let nested = r#"{"usage":1,"tail":{"usage":2}}"#;
        assert!(matches!(super::last_member(nested.as_bytes(), "usage"), super::Found::Unsure));
        assert!(matches!(super::last_member(br#"{"a":1}"#, "usage"), super::Found::Absent));
        assert_eq!(field(nested, "usage"), Some("1"));
        let in_string = r#"{"usage":1,"text":"a "usage": 2}"}"#;
        assert_eq!(field(in_string, "usage"), Some("1"));
        // An escaped spelling after the plain one is the one that counts.
        assert_eq!(field(r#"{"usage":1,"\u0075sage":2}"#, "usage"), Some("2"));
        let escaped_backslash = r#"{"usage":1,"text":"a\\","usage":3}"#;
        assert_eq!(field(escaped_backslash, "usage"), Some("3"));
        // Inside an array that is the top-level value.
        assert_eq!(field(r#"[{"usage":1}]"#, "usage"), None);
        // A body cut after the value but before the object closes.
        assert!(matches!(super::last_member(br#"{"usage":1,"a":2"#, "usage"), super::Found::Unsure));
        // A key longer than the stack buffer is looked for by the scan.
        let long = "k".repeat(40);
        assert_eq!(field(&format!(r#"{{"{long}":5}}"#), &long), Some("5"));
    }

    #[test]
    fn escaped_and_repeated_keys() {
        assert_eq!(field(r#"{"\u0075sage":5}"#, "usage"), Some("5"));
        assert_eq!(field(r#"{"usage":1,"usage":2}"#, "usage"), Some("2"));
        assert_eq!(field(r#"{"us\"age":1}"#, "usage"), None);
        // Cut after a complete value.
        assert_eq!(field(r#"{"usage":7,"choices":[{"#, "usage"), Some("7"));
    }

    proptest! {
        /// Whatever serde reads as the top-level field, the scan finds the same value.
        #[test]
        fn agrees_with_serde(v in any::<u32>(), s in "\\PC{0,20}", nested in any::<bool>()) {
            let mut obj = serde_json::Map::new();
            obj.insert("text".into(), serde_json::json!({"usage": s, "k": [s, {"usage": v}]}));
            if nested {
                obj.insert(s.clone(), serde_json::json!([[[]], {}]));
            }
            obj.insert("usage".into(), serde_json::json!({"prompt_tokens": v, "note": s}));
            if v % 3 == 0 {
                // After `usage` (keys are sorted), with a nested `usage` of its own.
                obj.insert("zz".into(), serde_json::json!({"usage": s}));
            } else if v % 3 == 1 {
                obj.insert("zz".into(), serde_json::json!(s));
            }
            let body = serde_json::to_vec(&serde_json::Value::Object(obj.clone())).unwrap();
            let raw = top_level(&body, "usage").unwrap();
            if let super::Found::Value(fast) = super::last_member(&body, "usage") {
                prop_assert_eq!(Some(fast), super::scan(&body, "usage"));
            }
            let got: serde_json::Value = serde_json::from_slice(raw).unwrap();
            prop_assert_eq!(&got, &obj["usage"]);
        }

        /// Never panics, on any bytes.
        #[test]
        fn any_bytes(body in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = top_level(&body, "usage");
        }
    }
}
