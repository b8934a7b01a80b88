//! Envoy's own errors (no cluster, no healthy upstream, timeout, overflow...) rewritten into
//! OpenAI-format JSON. Only replies carrying an Envoy response flag are mapped, so the gateway
//! filter's own JSON errors pass untouched.

use envoy_types::pb::envoy::config::accesslog::v3 as accesslog;
use envoy_types::pb::envoy::config::core::v3 as core;
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3 as hcm;
use envoy_types::pb::google::protobuf as pb;

use super::resources::{strukt, string_value, u32v};

struct Mapping {
    flags: &'static [&'static str],
    status: u32,
    kind: &'static str,
    code: &'static str,
    message: &'static str,
}

const MAPPINGS: &[Mapping] = &[
    Mapping {
        flags: &["NC", "NR"],
        status: 404,
        kind: "not_found_error",
        code: "model_not_available",
        message: "The model is not available on this gateway right now. List models with GET /v1/models.",
    },
    Mapping {
        flags: &["UT"],
        status: 504,
        kind: "api_error",
        code: "upstream_timeout",
        message: "The provider did not answer in time. Retry later, or raise the gateway's request timeout.",
    },
    Mapping {
        flags: &["UO"],
        status: 503,
        kind: "api_error",
        code: "overloaded",
        message: "The gateway is overloaded for this model. Retry with back-off.",
    },
    Mapping {
        flags: &["UH", "UF", "URX", "UC", "UR", "LR", "UMSDR"],
        status: 503,
        kind: "api_error",
        code: "upstream_unavailable",
        message: "No provider for this model could be reached. Retry later; if it persists, check the gateway's provider configuration.",
    },
    Mapping {
        flags: &["DPE", "DI"],
        status: 400,
        kind: "invalid_request_error",
        code: "bad_request",
        message: "The request could not be read as valid HTTP.",
    },
];

fn error_body(kind: &str, code: &str, message: &str) -> core::SubstitutionFormatString {
    let error = strukt(vec![
        ("message", string_value(message)),
        ("type", string_value(kind)),
        ("param", pb::Value { kind: Some(pb::value::Kind::NullValue(0)) }),
        ("code", string_value(code)),
    ]);
    core::SubstitutionFormatString {
        content_type: "application/json".to_owned(),
        format: Some(core::substitution_format_string::Format::JsonFormat(strukt(vec![(
            "error",
            pb::Value { kind: Some(pb::value::Kind::StructValue(error)) },
        )]))),
        ..Default::default()
    }
}

pub fn local_reply_config() -> hcm::LocalReplyConfig {
    hcm::LocalReplyConfig {
        mappers: MAPPINGS
            .iter()
            .map(|m| hcm::ResponseMapper {
                filter: Some(accesslog::AccessLogFilter {
                    filter_specifier: Some(accesslog::access_log_filter::FilterSpecifier::ResponseFlagFilter(
                        accesslog::ResponseFlagFilter { flags: m.flags.iter().map(|f| (*f).to_owned()).collect() },
                    )),
                }),
                status_code: Some(u32v(m.status)),
                body_format_override: Some(error_body(m.kind, m.code, m.message)),
                ..Default::default()
            })
            .collect(),
        body_format: None,
    }
}
