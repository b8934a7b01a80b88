use super::*;
use std::time::UNIX_EPOCH;

/// The headers to remove, each name once, by [`forwarded`] alone: what `survey` must find.
fn headers_to_remove<'h>(names: impl IntoIterator<Item = &'h str>, planned: &[&str]) -> Vec<&'h str> {
    let mut out: Vec<&str> = Vec::new();
    for name in names {
        if !forwarded(name, planned) && !out.contains(&name) {
            out.push(name);
        }
    }
    out
}

#[test]
fn only_allowed_and_planned_headers_are_kept() {
    let planned = ["authorization", "x-api-key", "accept", "content-type"];
    let headers: Vec<&str> = [
        ":path", ":method", "host", "content-length", "content-type", "accept", "authorization",
        "user-agent", "x-request-id", "x-stainless-os", "x-forwarded-proto",
        "openai-organization", "openai-project", "anthropic-beta", "x-amzn-bedrock-guardrailidentifier",
        "x-amzn-bedrock-trace", "cookie", "proxy-authorization", "x-forwarded-for", "x_tollgate_cluster",
        "x-tollgate-cluster", "accept-encoding", "cookie",
    ]
    .to_vec();
    let removed = [
        "openai-organization", "openai-project", "anthropic-beta", "x-amzn-bedrock-guardrailidentifier",
        "x-amzn-bedrock-trace", "cookie", "proxy-authorization", "x-forwarded-for", "x_tollgate_cluster",
        "x-tollgate-cluster", "accept-encoding",
    ];
    assert_eq!(headers_to_remove(headers.iter().copied(), &planned), removed);
    // What the provider filter runs.
    assert_eq!(survey(headers.iter().map(|h| (h.as_bytes(), &b"v"[..])), &planned).remove, removed);
}

#[test]
fn credentials_are_redacted() {
    let cases = [
        ("Incorrect API key provided: sk-proj-abcDEF1234567890abcdef.", "Incorrect API key provided: [redacted]"),
        ("key sk-ant-api03-XYZ was refused", "key [redacted] was refused"),
        ("Incorrect API key provided: sk-abc***wxyz", "Incorrect API key provided: [redacted]***wxyz"),
        ("The security token ASIAFAKEFAKEFAKEFAKE is invalid", "The security token [redacted] is invalid"),
        ("ASIAXYZ0123456789ABC expired", "[redacted] expired"),
        ("header was Authorization: Bearer abc.def", "header was Authorization: Bearer [redacted]"),
        ("bearer: short", "bearer: [redacted]"),
        ("virtual key tg-0123456789abcdef leaked", "virtual key [redacted] leaked"),
        ("secret 3q2+7w==ZmFrZWtleWZha2VrZXk1234 here", "secret [redacted] here"),
        ("hex 9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08", "hex [redacted]"),
        ("jwt eyJhbGciOi.eyJzdWIi.sig", "jwt [redacted]"),
    ];
    for (message, want) in cases {
        assert_eq!(redact(message), want, "{message}");
    }
}

#[test]
fn ordinary_messages_pass() {
    for message in [
        "This model's maximum context length is 128000 tokens. However, you requested 130532 tokens.",
        "messages: roles must alternate between \"user\" and \"assistant\"",
        "Rate limit reached for gpt-4o-mini in organization on tokens per min (TPM): Limit 200000.",
        "Received client error (400) from primary with message \"bad input\".",
    ] {
        assert_eq!(redact(message), message);
    }
}

#[test]
fn messages_are_capped_and_control_characters_dropped() {
    let long = "word ".repeat(500);
    assert!(redact(&long).len() <= MAX_PROVIDER_MESSAGE);
    let wide = "é".repeat(400);
    let cut = redact(&wide);
    assert!(cut.len() <= MAX_PROVIDER_MESSAGE && cut.chars().all(|c| c == 'é'));
    assert_eq!(redact("a\r\nSet-Cookie: x"), "a  Set-Cookie: x");
}

#[test]
fn retry_after_forms() {
    let now = UNIX_EPOCH + Duration::from_secs(1_445_412_480); // Wed, 21 Oct 2015 07:28:00 GMT
    assert_eq!(retry_after(b"7", now), Some(Duration::from_secs(7)));
    assert_eq!(retry_after(b" 999999 ", now), Some(Duration::from_secs(999_999)));
    assert_eq!(retry_after(b"1.5", now), Some(Duration::from_millis(1500)));
    assert_eq!(retry_after(b"Wed, 21 Oct 2015 07:28:30 GMT", now), Some(Duration::from_secs(30)));
    assert_eq!(retry_after(b"Wed, 21 Oct 2015 07:00:00 GMT", now), Some(Duration::ZERO));
    assert_eq!(retry_after(b"-1", now), None);
    assert_eq!(retry_after(b"soon", now), None);
    assert_eq!(retry_after_ms(b"1500"), Some(Duration::from_millis(1500)));
    assert_eq!(retry_after_ms(b"x"), None);
    assert_eq!(client_retry_after(Duration::from_secs(999_999)), "60");
    assert_eq!(client_retry_after(Duration::from_millis(1500)), "2");
    assert_eq!(client_retry_after(Duration::ZERO), "0");
}

/// `survey` finds what the per-name lookups and `headers_to_remove` find, on any header list.
mod survey_agrees {
    use super::*;
    use proptest::prelude::*;

    const NAMES: &[&str] = &[
        ":path", ":authority", ":method", "host", "content-length", "content-type", "accept", "authorization", "x-api-key",
        "user-agent", "x-request-id", "x-stainless-os", "x-forwarded-proto", "cookie", "accept-encoding", "anthropic-version",
        "x-amz-date", "openai-organization", "x-envoy-attempt-count",
    ];

    fn first<'h>(headers: &[(&'h [u8], &'h [u8])], name: &str) -> Option<&'h [u8]> {
        headers.iter().find(|(n, _)| *n == name.as_bytes()).map(|(_, v)| *v)
    }

    proptest! {
        #[test]
        fn as_the_lookups(picks in proptest::collection::vec((0..NAMES.len(), 0u8..4), 0..24), plan in proptest::collection::vec(0..NAMES.len(), 0..10)) {
            let values: Vec<Vec<u8>> = picks.iter().map(|&(i, v)| format!("{}-{v}", NAMES[i]).into_bytes()).collect();
            let headers: Vec<(&[u8], &[u8])> = picks.iter().zip(&values).map(|(&(i, _), v)| (NAMES[i].as_bytes(), v.as_slice())).collect();
            let planned: Vec<&str> = plan.iter().map(|&i| NAMES[i]).filter(|n| !n.starts_with(':') && *n != "host" && *n != "content-length").collect();
            let got = survey(headers.iter().copied(), &planned);
            let names = headers.iter().map(|(n, _)| std::str::from_utf8(n).unwrap());
            prop_assert_eq!(&got.remove, &headers_to_remove(names, &planned));
            prop_assert_eq!(got.path, first(&headers, ":path"));
            prop_assert_eq!(got.authority, first(&headers, ":authority"));
            prop_assert_eq!(got.content_length, first(&headers, "content-length"));
            for (i, p) in planned.iter().enumerate() {
                prop_assert_eq!(got.planned[i], first(&headers, p));
            }
        }
    }
}
