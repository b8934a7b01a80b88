//! OpenAI embeddings ⇄ Bedrock InvokeModel for the embedding model families Bedrock serves:
//! Amazon Titan Text Embeddings (`{"inputText"}`: one input per call) and Cohere Embed
//! (`{"texts": [...]}`). The family is told by the model id.

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::openai_to_bedrock::encode_path_segment;
use crate::{TranslateError, Usage};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    Titan,
    Cohere,
}

impl Family {
    /// `amazon.titan-embed-*` and `cohere.embed-*`, also behind a region prefix (`us.`...).
    pub fn of(model_id: &str) -> Option<Self> {
        if model_id.contains("titan-embed") {
            Some(Self::Titan)
        } else if model_id.contains("cohere.embed") {
            Some(Self::Cohere)
        } else {
            None
        }
    }
}

/// `/model/{modelId}/invoke`
pub fn invoke_path(model_id: &str) -> String {
    format!("/model/{}/invoke", encode_path_segment(model_id))
}

#[derive(Deserialize)]
struct EmbeddingsRequest {
    input: Input,
    #[serde(default)]
    dimensions: Option<u32>,
    #[serde(default)]
    encoding_format: Option<String>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum Input {
    One(String),
    Many(Vec<String>),
    /// Token arrays: Bedrock embedding models take text only.
    Other(serde::de::IgnoredAny),
}

fn unsupported(param: &str, reason: &str) -> TranslateError {
    TranslateError::Unsupported { param: param.to_owned(), reason: reason.to_owned() }
}

/// How the client wants vectors encoded (the OpenAI SDK asks for base64 by default).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    Float,
    /// Little-endian f32s, base64-encoded.
    Base64,
}

/// The InvokeModel body for an OpenAI embeddings request, and the encoding to answer in.
pub fn request(body: &[u8], family: Family) -> Result<(Vec<u8>, Encoding), TranslateError> {
    let req: EmbeddingsRequest =
        serde_json::from_slice(body).map_err(|e| TranslateError::RequestParse(format!("embeddings request: {e}")))?;
    let encoding = match req.encoding_format.as_deref() {
        None | Some("float") => Encoding::Float,
        Some("base64") => Encoding::Base64,
        Some(_) => return Err(unsupported("encoding_format", "use \"float\" or \"base64\"")),
    };
    let texts = match req.input {
        Input::One(s) => vec![s],
        Input::Many(v) if !v.is_empty() => v,
        Input::Many(_) => return Err(TranslateError::RequestParse("'input' must not be empty".into())),
        Input::Other(_) => return Err(unsupported("input", "Bedrock embedding models take text, not token arrays")),
    };
    let out = match family {
        Family::Titan => {
            let [text] = <[String; 1]>::try_from(texts)
                .map_err(|_| unsupported("input", "Titan embeddings take one input per request; send them one at a time"))?;
            let mut v = json!({ "inputText": text });
            if let Some(d) = req.dimensions {
                v["dimensions"] = json!(d);
            }
            v
        }
        Family::Cohere => {
            if req.dimensions.is_some() {
                return Err(unsupported("dimensions", "Cohere Embed on Bedrock has a fixed size"));
            }
            json!({ "texts": texts, "input_type": "search_document" })
        }
    };
    let body = serde_json::to_vec(&out).map_err(|e| TranslateError::RequestParse(e.to_string()))?;
    Ok((body, encoding))
}

#[derive(Serialize)]
struct EmbeddingList<'a> {
    object: &'static str,
    data: Vec<Embedding>,
    model: &'a str,
    usage: EmbeddingUsage,
}

#[derive(Serialize)]
struct Embedding {
    object: &'static str,
    index: usize,
    embedding: Value,
}

fn encode(v: Vec<f64>, encoding: Encoding) -> Value {
    match encoding {
        Encoding::Float => json!(v),
        Encoding::Base64 => {
            use base64::Engine as _;
            let bytes: Vec<u8> = v.iter().flat_map(|x| (*x as f32).to_le_bytes()).collect();
            Value::String(base64::engine::general_purpose::STANDARD.encode(bytes))
        }
    }
}

#[derive(Serialize)]
struct EmbeddingUsage {
    prompt_tokens: u64,
    total_tokens: u64,
}

/// Bedrock reports InvokeModel's input token count in this response header (not in botocore's
/// service model; it is on every InvokeModel response). Cohere Embed's body has no count.
pub const INPUT_TOKEN_COUNT_HEADER: &str = "x-amzn-bedrock-input-token-count";

/// Whether the usage of this family comes from `INPUT_TOKEN_COUNT_HEADER` (Titan's body has it).
pub fn usage_from_header(family: Family) -> bool {
    family == Family::Cohere
}

/// The header's value as a token count (`None` when absent or not a number).
pub fn parse_token_count(value: &[u8]) -> Option<u64> {
    std::str::from_utf8(value).ok()?.trim().parse().ok()
}

/// The OpenAI embeddings list for an InvokeModel response; `header_tokens` is the
/// `X-Amzn-Bedrock-Input-Token-Count` response header, read for Cohere.
pub fn response(
    body: &[u8],
    family: Family,
    encoding: Encoding,
    model: &str,
    header_tokens: Option<u64>,
) -> Result<(Vec<u8>, Usage), TranslateError> {
    #[derive(Deserialize)]
    struct Titan {
        embedding: Vec<f64>,
        #[serde(default, rename = "inputTextTokenCount")]
        tokens: Option<u64>,
    }
    #[derive(Deserialize)]
    struct Cohere {
        embeddings: Vec<Vec<f64>>,
    }
    let parse = |e: serde_json::Error| TranslateError::ResponseParse(format!("embeddings response: {e}"));
    let (vectors, tokens) = match family {
        Family::Titan => {
            let t: Titan = serde_json::from_slice(body).map_err(parse)?;
            (vec![t.embedding], t.tokens)
        }
        // Cohere on Bedrock reports its token count only in the response header.
        Family::Cohere => (serde_json::from_slice::<Cohere>(body).map_err(parse)?.embeddings, header_tokens),
    };
    let n = tokens.unwrap_or(0);
    let list = EmbeddingList {
        object: "list",
        data: vectors
            .into_iter()
            .enumerate()
            .map(|(index, v)| Embedding { object: "embedding", index, embedding: encode(v, encoding) })
            .collect(),
        model,
        usage: EmbeddingUsage { prompt_tokens: n, total_tokens: n },
    };
    let out = serde_json::to_vec(&list).map_err(|e| TranslateError::ResponseParse(e.to_string()))?;
    Ok((out, Usage { input: tokens, output: Some(0), ..Usage::default() }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn families() {
        assert_eq!(Family::of("amazon.titan-embed-text-v2:0"), Some(Family::Titan));
        assert_eq!(Family::of("cohere.embed-english-v3"), Some(Family::Cohere));
        assert_eq!(Family::of("anthropic.claude-3"), None);
        assert_eq!(invoke_path("amazon.titan-embed-text-v2:0"), "/model/amazon.titan-embed-text-v2%3A0/invoke");
    }

    #[test]
    fn titan_round_trip() {
        let (body, enc) = request(br#"{"model":"e","input":"hello","dimensions":256}"#, Family::Titan).unwrap();
        assert_eq!(enc, Encoding::Float);
        let v: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v, json!({"inputText": "hello", "dimensions": 256}));
        let many = request(br#"{"model":"e","input":["a","b"]}"#, Family::Titan).unwrap_err();
        assert_eq!(many.param(), Some("input"));
        let (out, usage) = response(br#"{"embedding":[0.5,-0.25],"inputTextTokenCount":3}"#, Family::Titan, Encoding::Float, "e", None).unwrap();
        let v: Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["data"][0]["embedding"], json!([0.5, -0.25]));
        assert_eq!(v["usage"]["prompt_tokens"], 3);
        assert_eq!(usage.input, Some(3));
    }

    #[test]
    fn cohere_round_trip() {
        let (body, _) = request(br#"{"model":"e","input":["a","b"]}"#, Family::Cohere).unwrap();
        let v: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["texts"], json!(["a", "b"]));
        let (out, usage) = response(br#"{"embeddings":[[1.0],[2.0]],"id":"x"}"#, Family::Cohere, Encoding::Float, "e", Some(7)).unwrap();
        let v: Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["data"][1]["index"], 1);
        assert_eq!(v["data"][1]["embedding"], json!([2.0]));
        // the count from X-Amzn-Bedrock-Input-Token-Count
        assert_eq!((v["usage"]["prompt_tokens"].as_u64(), v["usage"]["total_tokens"].as_u64()), (Some(7), Some(7)));
        assert_eq!(usage.input, Some(7));
    }

    #[test]
    fn floats_pass_exactly() {
        // Without serde_json's float_roundtrip this came back as ...07252: a vector changed.
        let body = br#"{"embeddings":[[-0.10393291711807251,0.4080241918563843]]}"#;
        let (out, _) = response(body, Family::Cohere, Encoding::Float, "e", None).unwrap();
        let v: Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["data"][0]["embedding"].to_string(), "[-0.10393291711807251,0.4080241918563843]");
    }

    #[test]
    fn token_count_header() {
        assert!(usage_from_header(Family::Cohere) && !usage_from_header(Family::Titan));
        assert_eq!(parse_token_count(b"12"), Some(12));
        assert_eq!(parse_token_count(b" 3 "), Some(3));
        assert_eq!(parse_token_count(b"-1"), None);
        assert_eq!(parse_token_count(b"\xff"), None);
        let (out, usage) = response(br#"{"embeddings":[[1.0]]}"#, Family::Cohere, Encoding::Float, "e", None).unwrap();
        assert_eq!(usage.input, None);
        let v: Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["usage"]["prompt_tokens"], 0);
    }

    #[test]
    fn rejects_what_bedrock_cannot_do() {
        assert_eq!(request(br#"{"input":[1,2,3]}"#, Family::Cohere).unwrap_err().param(), Some("input"));
        assert_eq!(request(br#"{"input":"a","encoding_format":"hex"}"#, Family::Titan).unwrap_err().param(), Some("encoding_format"));
        assert!(request(br#"{"input":[]}"#, Family::Cohere).is_err());
        assert!(response(b"{}", Family::Titan, Encoding::Float, "e", None).is_err());
    }

    #[test]
    fn base64_is_little_endian_f32() {
        use base64::Engine as _;
        let (_, enc) = request(br#"{"input":"a","encoding_format":"base64"}"#, Family::Titan).unwrap();
        let (out, _) = response(br#"{"embedding":[1.0,-2.5]}"#, Family::Titan, enc, "e", None).unwrap();
        let v: Value = serde_json::from_slice(&out).unwrap();
        let bytes = base64::engine::general_purpose::STANDARD.decode(v["data"][0]["embedding"].as_str().unwrap()).unwrap();
        let floats: Vec<f32> = bytes.chunks(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect();
        assert_eq!(floats, vec![1.0, -2.5]);
    }
}
