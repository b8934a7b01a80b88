//! SigV4 signing of one attempt, after the last body change, over exactly the bytes sent.
//! Pure: the time is passed in.

use std::time::SystemTime;

use aws_credential_types::Credentials;
use aws_sigv4::http_request::{sign, SignableBody, SignableRequest, SigningSettings};
use aws_sigv4::sign::v4;
use aws_smithy_runtime_api::client::identity::Identity;
use tollgate_contract::config::AwsCredential;

/// What to sign.
pub struct ToSign<'a> {
    pub method: &'a str,
    pub authority: &'a str,
    /// Path (already percent-encoded as sent) and query.
    pub path: &'a str,
    /// Headers sent that are part of the signature (besides host and the x-amz-* the signer adds).
    pub headers: &'a [(&'a str, &'a str)],
    pub body: &'a [u8],
    pub region: &'a str,
    pub service: &'a str,
}

/// Returns the headers to set (`authorization`, `x-amz-date`, `x-amz-security-token`).
pub fn sign_request(req: &ToSign<'_>, cred: &AwsCredential, now: SystemTime) -> Result<Vec<(String, String)>, String> {
    let identity: Identity = Credentials::new(
        cred.access_key_id.clone(),
        cred.secret_access_key.clone(),
        cred.session_token.clone(),
        None,
        "tollgate",
    )
    .into();
    let params = v4::SigningParams::builder()
        .identity(&identity)
        .region(req.region)
        .name(req.service)
        .time(now)
        .settings(SigningSettings::default())
        .build()
        .map_err(|e| format!("signing parameters: {e}"))?
        .into();
    let url = format!("https://{}{}", req.authority, req.path);
    let mut headers: Vec<(&str, &str)> = vec![("host", req.authority)];
    headers.extend(req.headers.iter().copied());
    let signable = SignableRequest::new(req.method, url, headers.into_iter(), SignableBody::Bytes(req.body))
        .map_err(|e| format!("request cannot be signed: {e}"))?;
    let (instructions, _signature) = sign(signable, &params).map_err(|e| format!("signing failed: {e}"))?.into_parts();
    Ok(instructions.headers().map(|(k, v)| (k.to_owned(), v.to_owned())).collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, UNIX_EPOCH};

    /// The AWS SigV4 test suite's credentials and its "post-vanilla" case: a POST to
    /// example.amazonaws.com, service "service", region us-east-1, at 20150830T123600Z.
    #[test]
    fn matches_aws_test_suite_post_vanilla() {
        let cred = AwsCredential {
            access_key_id: "AKIDEXAMPLE".into(),
            secret_access_key: "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY".into(),
            session_token: None,
        };
        let now = UNIX_EPOCH + Duration::from_secs(1_440_938_160);
        let out = sign_request(
            &ToSign {
                method: "POST",
                authority: "example.amazonaws.com",
                path: "/",
                headers: &[],
                body: b"",
                region: "us-east-1",
                service: "service",
            },
            &cred,
            now,
        )
        .unwrap();
        let auth = out.iter().find(|(k, _)| k == "authorization").map(|(_, v)| v.as_str()).unwrap();
        assert_eq!(
            auth,
            "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, \
             SignedHeaders=host;x-amz-date, \
             Signature=5da7c1a2acd57cee7505fc6676e4e544621c30862966e37dddb68e92efbe5d6b"
        );
        assert!(out.iter().any(|(k, v)| k == "x-amz-date" && v == "20150830T123600Z"));
    }

    #[test]
    fn session_token_is_sent_and_signed() {
        let cred = AwsCredential {
            access_key_id: "AKIDEXAMPLE".into(),
            secret_access_key: "secret".into(),
            session_token: Some("token".into()),
        };
        let out = sign_request(
            &ToSign {
                method: "POST",
                authority: "bedrock-runtime.us-east-1.amazonaws.com",
                path: "/model/us.anthropic.claude-3-5-sonnet-20240620-v1%3A0/converse",
                headers: &[("content-type", "application/json")],
                body: b"{}",
                region: "us-east-1",
                service: "bedrock",
            },
            &cred,
            UNIX_EPOCH + Duration::from_secs(1_700_000_000),
        )
        .unwrap();
        assert!(out.iter().any(|(k, v)| k == "x-amz-security-token" && v == "token"));
        let auth = &out.iter().find(|(k, _)| k == "authorization").unwrap().1;
        assert!(auth.contains("SignedHeaders=content-type;host;x-amz-date;x-amz-security-token"), "{auth}");
    }
}
