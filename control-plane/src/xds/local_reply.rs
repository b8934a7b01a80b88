//! Envoy's own errors (no cluster, no healthy upstream, timeout, overflow, the edge limits...)
//! rewritten into OpenAI-format JSON. Only replies carrying an Envoy response flag, or a status
//! only Envoy itself answers (408 request timeout, 431 headers too large), are mapped, so the
//! gateway filter's own JSON errors pass untouched.

use envoy_types::pb::envoy::config::accesslog::v3 as accesslog;
use envoy_types::pb::envoy::config::core::v3 as core;
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3 as hcm;
use envoy_types::pb::google::protobuf as pb;

use super::resources::{any, strukt, string_value, u32v};

/// What a mapping matches: Envoy response flags, or a status the filters never answer.
enum When {
    Flags(&'static [&'static str]),
    Status(u32),
    /// A CEL expression over Envoy's attributes (the `envoy.access_loggers.extension_filters.cel`
    /// filter).
    Cel(&'static str),
}

struct Mapping {
    when: When,
    status: u32,
    kind: &'static str,
    code: &'static str,
    message: &'static str,
}

const MAPPINGS: &[Mapping] = &[
    // Before the protocol errors: Envoy's HTTP/1 codec answers these with the DPE flag too.
    Mapping {
        when: When::Status(431),
        status: 431,
        kind: "invalid_request_error",
        code: "request_headers_too_large",
        message: "The request headers are too large or too many. Send fewer or smaller headers.",
    },
    Mapping {
        when: When::Status(408),
        status: 408,
        kind: "invalid_request_error",
        code: "request_timeout",
        message: "The request was not received in time. Send the whole request promptly.",
    },
    // Requests Envoy refuses before any filter runs (a header name with `_` or a bad character
    // in the codec, an invalid Host in the connection manager): Envoy's own 400 carries no
    // response flag, only its details (`http1.*`, `http.invalid_authority`, ...). The filters'
    // own local replies carry the details `tollgate` (tollgate-wasm) and stay as they are.
    Mapping {
        when: When::Cel(
            "response.code == 400 && !response.code_details.contains('tollgate')",
        ),
        status: 400,
        kind: "invalid_request_error",
        code: "bad_request",
        message: "The request could not be read as valid HTTP (header names may not contain `_`).",
    },
    // The overload manager refuses before the stream has a response flag: matched by details.
    Mapping {
        when: When::Cel("response.code == 503 && response.code_details == 'overload'"),
        status: 503,
        kind: "api_error",
        code: "overloaded",
        message: "The gateway is overloaded. Retry with back-off.",
    },
    Mapping {
        when: When::Flags(&["NC", "NR"]),
        status: 404,
        kind: "not_found_error",
        code: "model_not_available",
        message: "The model is not available on this gateway right now. List models with GET /v1/models.",
    },
    Mapping {
        when: When::Flags(&["UT"]),
        status: 504,
        kind: "api_error",
        code: "upstream_timeout",
        message: "The provider did not answer in time. Retry later, or raise the gateway's request timeout.",
    },
    Mapping {
        when: When::Flags(&["UO"]),
        status: 503,
        kind: "api_error",
        code: "overloaded",
        message: "The gateway is overloaded for this model. Retry with back-off.",
    },
    Mapping {
        when: When::Flags(&["UH", "UF", "URX", "UC", "UR", "LR", "UMSDR"]),
        status: 503,
        kind: "api_error",
        code: "upstream_unavailable",
        message: "No provider for this model could be reached. Retry later; if it persists, check the gateway's provider configuration.",
    },
    Mapping {
        when: When::Flags(&["DPE", "DI"]),
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

fn specifier(when: &When) -> accesslog::access_log_filter::FilterSpecifier {
    use accesslog::access_log_filter::FilterSpecifier;
    match when {
        When::Flags(flags) => FilterSpecifier::ResponseFlagFilter(accesslog::ResponseFlagFilter {
            flags: flags.iter().map(|f| (*f).to_owned()).collect(),
        }),
        When::Cel(expression) => FilterSpecifier::ExtensionFilter(accesslog::ExtensionFilter {
            name: "envoy.access_loggers.extension_filters.cel".to_owned(),
            config_type: Some(accesslog::extension_filter::ConfigType::TypedConfig(any(
                &envoy_types::pb::envoy::extensions::access_loggers::filters::cel::v3::ExpressionFilter {
                    expression: (*expression).to_owned(),
                    ..Default::default()
                },
            ))),
        }),
        When::Status(status) => FilterSpecifier::StatusCodeFilter(accesslog::StatusCodeFilter {
            comparison: Some(accesslog::ComparisonFilter {
                op: accesslog::comparison_filter::Op::Eq as i32,
                value: Some(core::RuntimeUInt32 {
                    default_value: *status,
                    runtime_key: format!("tollgate.local_reply.status_{status}"),
                }),
            }),
        }),
    }
}

pub fn local_reply_config() -> hcm::LocalReplyConfig {
    hcm::LocalReplyConfig {
        mappers: MAPPINGS
            .iter()
            .map(|m| hcm::ResponseMapper {
                filter: Some(accesslog::AccessLogFilter { filter_specifier: Some(specifier(&m.when)) }),
                status_code: Some(u32v(m.status)),
                body_format_override: Some(error_body(m.kind, m.code, m.message)),
                ..Default::default()
            })
            .collect(),
        body_format: None,
    }
}
