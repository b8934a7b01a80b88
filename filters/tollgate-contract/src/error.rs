//! Errors as the client sees them: one mapping from an error kind to the HTTP status and the
//! OpenAI error body. Messages are always safe to show (no secrets, no internal detail).

use serde::Serialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// 400: the request is malformed or invalid.
    InvalidRequest,
    /// 401: missing, unknown, revoked or expired key.
    Authentication,
    /// 403: the key may not do this.
    Permission,
    /// 404: unknown model or path.
    NotFound,
    /// 405: wrong method for the path.
    MethodNotAllowed,
    /// 413: body over the configured limit.
    TooLarge,
    /// 415: a body that is declared as something other than JSON.
    UnsupportedMediaType,
    /// 429
    RateLimited,
    /// 502: the provider answered something we could not use.
    BadGateway,
    /// 503: the gateway is not ready (e.g. credentials not loaded yet).
    Unavailable,
    /// 500: our fault.
    Internal,
    /// A provider's server-side failure, reported with the provider's 5xx status.
    Upstream(u16),
}

impl ErrorKind {
    pub fn status(self) -> u16 {
        match self {
            Self::InvalidRequest => 400,
            Self::Authentication => 401,
            Self::Permission => 403,
            Self::NotFound => 404,
            Self::MethodNotAllowed => 405,
            Self::TooLarge => 413,
            Self::UnsupportedMediaType => 415,
            Self::RateLimited => 429,
            Self::BadGateway => 502,
            Self::Unavailable => 503,
            Self::Internal => 500,
            Self::Upstream(status) => status,
        }
    }

    /// The OpenAI `error.type`.
    pub fn openai_type(self) -> &'static str {
        match self {
            Self::InvalidRequest | Self::TooLarge | Self::MethodNotAllowed | Self::UnsupportedMediaType => "invalid_request_error",
            Self::Authentication => "authentication_error",
            Self::Permission => "permission_error",
            Self::NotFound => "not_found_error",
            Self::RateLimited => "rate_limit_error",
            Self::BadGateway | Self::Unavailable | Self::Internal | Self::Upstream(_) => "api_error",
        }
    }
}

/// The API a client speaks: errors are answered in its format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientApi {
    OpenAi,
    Anthropic,
    /// Bedrock Runtime (boto3 `bedrock-runtime`, the AWS SDKs).
    Bedrock,
}

/// An error answered to the client.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct GatewayError {
    pub kind: ErrorKind,
    pub message: String,
    pub param: Option<String>,
    pub code: Option<&'static str>,
}

impl GatewayError {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Self { kind, message: message.into(), param: None, code: None }
    }

    pub fn param(mut self, param: impl Into<String>) -> Self {
        self.param = Some(param.into());
        self
    }

    pub fn code(mut self, code: &'static str) -> Self {
        self.code = Some(code);
        self
    }

    pub fn status(&self) -> u16 {
        self.kind.status()
    }

    /// The error body in the client's API format.
    pub fn to_json(&self, api: ClientApi) -> Vec<u8> {
        match api {
            ClientApi::OpenAi => self.to_openai_json(),
            ClientApi::Anthropic => self.to_anthropic_json(),
            ClientApi::Bedrock => {
                serde_json::to_vec(&serde_json::json!({ "message": self.message })).unwrap_or_default()
            }
        }
    }

    /// The `x-amzn-errortype` an AWS SDK reads to pick the exception class.
    pub fn aws_error_type(&self) -> &'static str {
        match self.kind {
            ErrorKind::InvalidRequest | ErrorKind::MethodNotAllowed | ErrorKind::TooLarge | ErrorKind::UnsupportedMediaType => {
                "ValidationException"
            }
            ErrorKind::Authentication | ErrorKind::Permission => "AccessDeniedException",
            ErrorKind::NotFound => "ResourceNotFoundException",
            ErrorKind::RateLimited => "ThrottlingException",
            ErrorKind::Unavailable => "ServiceUnavailableException",
            ErrorKind::Upstream(504) => "ModelTimeoutException",
            ErrorKind::BadGateway | ErrorKind::Internal | ErrorKind::Upstream(_) => "InternalServerException",
        }
    }

    /// `{"type": "error", "error": {"type", "message"}}`
    pub fn to_anthropic_json(&self) -> Vec<u8> {
        let kind = match self.kind {
            ErrorKind::InvalidRequest | ErrorKind::MethodNotAllowed | ErrorKind::UnsupportedMediaType => "invalid_request_error",
            ErrorKind::Authentication => "authentication_error",
            ErrorKind::Permission => "permission_error",
            ErrorKind::NotFound => "not_found_error",
            ErrorKind::TooLarge => "request_too_large",
            ErrorKind::RateLimited => "rate_limit_error",
            ErrorKind::Unavailable => "overloaded_error",
            ErrorKind::BadGateway | ErrorKind::Internal | ErrorKind::Upstream(_) => "api_error",
        };
        serde_json::to_vec(&serde_json::json!({"type": "error", "error": {"type": kind, "message": self.message}}))
            .unwrap_or_default()
    }

    /// `{"error": {"message", "type", "param", "code"}}`
    pub fn to_openai_json(&self) -> Vec<u8> {
        #[derive(Serialize)]
        struct Body<'a> {
            error: Inner<'a>,
        }
        #[derive(Serialize)]
        struct Inner<'a> {
            message: &'a str,
            #[serde(rename = "type")]
            kind: &'a str,
            param: Option<&'a str>,
            code: Option<&'a str>,
        }
        let body = Body {
            error: Inner {
                message: &self.message,
                kind: self.kind.openai_type(),
                param: self.param.as_deref(),
                code: self.code,
            },
        };
        // Serialising plain strings cannot fail; fall back to a fixed body if it ever did.
        serde_json::to_vec(&body).unwrap_or_else(|_| {
            br#"{"error":{"message":"internal error","type":"api_error","param":null,"code":null}}"#
                .to_vec()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn openai_shape() {
        let e = GatewayError::new(ErrorKind::NotFound, "The model `x` does not exist")
            .param("model")
            .code("model_not_found");
        let v: serde_json::Value = serde_json::from_slice(&e.to_openai_json()).unwrap();
        assert_eq!(v["error"]["type"], "not_found_error");
        assert_eq!(v["error"]["param"], "model");
        assert_eq!(v["error"]["code"], "model_not_found");
        assert_eq!(v["error"]["message"], "The model `x` does not exist");
        assert_eq!(e.status(), 404);
    }

    #[test]
    fn anthropic_shape() {
        let e = GatewayError::new(ErrorKind::Authentication, "bad key");
        let v: serde_json::Value = serde_json::from_slice(&e.to_json(ClientApi::Anthropic)).unwrap();
        assert_eq!(v["type"], "error");
        assert_eq!(v["error"]["type"], "authentication_error");
        assert_eq!(v["error"]["message"], "bad key");
    }

    #[test]
    fn null_param_and_code() {
        let e = GatewayError::new(ErrorKind::Authentication, "no key");
        let v: serde_json::Value = serde_json::from_slice(&e.to_openai_json()).unwrap();
        assert!(v["error"]["param"].is_null());
        assert!(v["error"]["code"].is_null());
        assert_eq!(e.status(), 401);
    }
}
