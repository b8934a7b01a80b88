//! The provider adapter's decisions for one attempt: which path, authority and credential to
//! send, and the rewritten body. For OpenAI-compatible providers the body is rewritten loss-free:
//! only `model` changes; every other field travels byte for byte.

use std::collections::BTreeMap;

use serde_json::value::RawValue;

use crate::config::{DeploymentMeta, ProviderKind};
use crate::error::{ErrorKind, GatewayError};
use crate::request::Operation;

/// The edits to apply to the upstream request of one attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestEdit {
    pub path: String,
    pub authority: String,
    /// `Authorization` value to send; `None` removes the header.
    pub authorization: Option<String>,
    pub body: Vec<u8>,
}

pub fn request(
    meta: &DeploymentMeta,
    op: &Operation,
    api_key: Option<&str>,
    body: &[u8],
) -> Result<RequestEdit, GatewayError> {
    match meta.provider {
        ProviderKind::Openai => openai_request(meta, op, api_key, body),
        ProviderKind::Unknown => Err(GatewayError::new(
            ErrorKind::Internal,
            "This deployment uses a provider this gateway version does not support.",
        )),
    }
}

fn openai_request(
    meta: &DeploymentMeta,
    op: &Operation,
    api_key: Option<&str>,
    body: &[u8],
) -> Result<RequestEdit, GatewayError> {
    let suffix = match op {
        Operation::ChatCompletions => "/chat/completions",
        Operation::Embeddings => "/embeddings",
        Operation::ListModels | Operation::RetrieveModel(_) => {
            return Err(GatewayError::new(ErrorKind::Internal, "operation is not sent to providers"))
        }
    };
    let mut fields: BTreeMap<String, Box<RawValue>> = serde_json::from_slice(body).map_err(|_| {
        GatewayError::new(ErrorKind::InvalidRequest, "The request body must be a JSON object.")
            .code("invalid_json")
    })?;
    let model = serde_json::to_string(&meta.model)
        .ok()
        .and_then(|s| RawValue::from_string(s).ok())
        .ok_or_else(|| GatewayError::new(ErrorKind::Internal, "could not encode the provider model id"))?;
    fields.insert("model".to_owned(), model);
    let body = serde_json::to_vec(&fields)
        .map_err(|_| GatewayError::new(ErrorKind::Internal, "could not encode the provider request"))?;
    Ok(RequestEdit {
        path: format!("{}{}", meta.base_path.trim_end_matches('/'), suffix),
        authority: meta.authority.clone(),
        authorization: api_key.map(|k| format!("Bearer {k}")),
        body,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta() -> DeploymentMeta {
        DeploymentMeta {
            id: "d1".into(),
            provider: ProviderKind::Openai,
            model: "gpt-4o-mini-2024".into(),
            authority: "api.example.com".into(),
            base_path: "/v1/".into(),
            credential: Some("c".into()),
        }
    }

    #[test]
    fn rewrites_only_the_model() {
        let body = br#"{"model":"alias","messages":[{"role":"user","content":"hi"}],"temperature":0.10000000000000001,"x_custom":{"a":[1,2]}}"#;
        let edit = request(&meta(), &Operation::ChatCompletions, Some("sk-test"), body).unwrap();
        assert_eq!(edit.path, "/v1/chat/completions");
        assert_eq!(edit.authority, "api.example.com");
        assert_eq!(edit.authorization.as_deref(), Some("Bearer sk-test"));
        let s = String::from_utf8(edit.body).unwrap();
        assert!(s.contains(r#""model":"gpt-4o-mini-2024""#), "{s}");
        // unknown fields and exact number spelling survive
        assert!(s.contains(r#""temperature":0.10000000000000001"#), "{s}");
        assert!(s.contains(r#""x_custom":{"a":[1,2]}"#), "{s}");
        assert!(s.contains(r#""messages":[{"role":"user","content":"hi"}]"#), "{s}");
    }

    #[test]
    fn embeddings_path_and_no_credential() {
        let edit = request(&meta(), &Operation::Embeddings, None, br#"{"model":"a","input":"x"}"#).unwrap();
        assert_eq!(edit.path, "/v1/embeddings");
        assert_eq!(edit.authorization, None);
    }

    #[test]
    fn rejects_non_object() {
        let err = request(&meta(), &Operation::ChatCompletions, None, b"[1]").unwrap_err();
        assert_eq!(err.status(), 400);
    }

    #[test]
    fn unknown_provider_is_internal_error() {
        let mut m = meta();
        m.provider = ProviderKind::Unknown;
        assert_eq!(request(&m, &Operation::ChatCompletions, None, b"{}").unwrap_err().status(), 500);
    }
}
