#!/usr/bin/env python3
"""Writes the seed corpus (fuzz/corpus/<target>/seed-*) from the golden fixtures under
filters/tollgate-llm/tests/fixtures and a few hand-written cases from the unit tests.
Run once when fixtures change: `python3 fuzz/seeds.py`. Files libFuzzer adds (crashes
minimised, new coverage worth keeping) sit beside these and are never overwritten."""
import glob, os, struct

ROOT = os.path.dirname(os.path.abspath(__file__))
FIX = os.path.join(ROOT, "..", "filters", "tollgate-llm", "tests", "fixtures")
MAX = 8192


def put(target, name, data):
    if isinstance(data, str):
        data = data.encode()
    if len(data) > MAX:
        return
    d = os.path.join(ROOT, "corpus", target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, "seed-" + name), "wb") as f:
        f.write(data)


def fixtures(pattern):
    for p in sorted(glob.glob(os.path.join(FIX, pattern))):
        name = os.path.basename(p).split(".")[0]
        with open(p, "rb") as f:
            yield name, f.read()


def select(b):
    return bytes([b])


# gateway
for line in ["POST /v1/chat/completions", "POST /v1/embeddings/", "GET /v1/models/a%2Fb", "POST /v1/messages",
             "POST /bedrock/model/m/converse-stream", "POST /model/arn%3Aaws%3Abedrock/converse", "GET /v1/nope"]:
    put("gateway_classify", line.split()[1].strip("/").replace("/", "_").replace("%", "") or "root", line)
for name, body in fixtures("anthropic/openai_to_anthropic/request/*.in.json"):
    put("gateway_route", "chat-" + name, select(0) + body.replace(b'"model"', b'"model":"b","x"', 1))
put("gateway_route", "chat-min", select(0) + b'{"model":"b","messages":[{"role":"user","content":"hi"}]}')
put("gateway_route", "chat-only-a", select(0x10) + b'{"model":"b","messages":[{"role":"user","content":"hi"}]}')
put("gateway_route", "embeddings", select(1) + b'{"model":"a","input":["x","y"]}')
put("gateway_route", "huge-number", select(0) + b'{"model":"b","messages":[{"role":"user","content":"hi"}],"x":[1,2E2222]}')
put("gateway_route", "forbidden", select(0) + b'{"model":"b","messages":[{"role":"user","content":"hi"}],"api_base":"http://x"}')
put("gateway_route", "deep", select(0) + b'{"model":"a","messages":[],"x":' + b"[" * 130 + b"]" * 130 + b"}")
for name, body in fixtures("anthropic/anthropic_to_openai/request/*.in.json"):
    put("gateway_route", "anthropic-" + name, select(2) + body)
for name, body in fixtures("bedrock_ingress/request/*.in.json"):
    put("gateway_route", "converse-" + name, select(3) + body)

# requests
for name, body in fixtures("anthropic/openai_to_anthropic/request/*.in.json"):
    put("openai_request", "anthropic-" + name, body)
for name, body in fixtures("bedrock/request/*.openai.json"):
    put("openai_request", "bedrock-" + name, body)
for name, body in fixtures("sagemaker_tgi/request/*.in.json"):
    if not name.startswith("err_"):
        put("openai_request", "tgi-" + name, body)
for name, body in fixtures("anthropic/anthropic_to_openai/request/*.in.json"):
    put("anthropic_request", name, body)
for name, body in fixtures("bedrock_ingress/request/*.in.json"):
    put("bedrock_request", name, select(0) + body)
put("embeddings_request", "titan", select(0) + b'{"model":"e","input":"hello"}')
put("embeddings_request", "cohere-base64", select(1) + b'{"model":"e","input":["a","b"],"encoding_format":"base64"}')
put("embeddings_request", "tokens", select(0) + b'{"model":"e","input":[1,2,3]}')

# responses: selector as in requests::provider_response
for name, body in fixtures("anthropic/openai_to_anthropic/response/*.in.json"):
    put("provider_response", "anthropic-" + name, select(0) + body)
for name, body in fixtures("bedrock/response/*.converse.json"):
    put("provider_response", "bedrock-" + name, select(1) + body)
for name, body in fixtures("sagemaker_tgi/response/*.in.json"):
    put("provider_response", "tgi-" + name, select(2) + body)
for name, body in fixtures("anthropic/anthropic_to_openai/response/*.in.json"):
    put("provider_response", "client-anthropic-" + name, select(3) + body)
for name, body in fixtures("bedrock_ingress/response/*.in.json"):
    put("provider_response", "client-bedrock-" + name, select(4) + body)
put("provider_response", "titan", select(5) + b'{"embedding":[0.5,-1.0],"inputTextTokenCount":3}')
put("provider_response", "cohere", select(6) + b'{"embeddings":[[0.5,-1.0]],"texts":["a"]}')

# streams: selector, split seed, bytes
for name, body in fixtures("anthropic/openai_to_anthropic/stream/*[!t].sse"):
    put("sse_decoder", name, select(0) + select(3) + body)
    put("stream_translator", "anthropic-" + name, select(0x10) + select(7) + body)
    put("stream_translator", "anthropic-bedrock-client-" + name, select(7) + select(5) + body)
for name, body in fixtures("anthropic/anthropic_to_openai/stream/*.in.sse"):
    put("stream_translator", "client-anthropic-" + name, select(3) + select(11) + body)
    put("stream_translator", "usage-tap-" + name, select(0x15) + select(2) + body)
for name, body in fixtures("bedrock_ingress/stream/*.in.sse"):
    put("stream_translator", "client-bedrock-" + name, select(4) + select(13) + body)
for name, body in fixtures("bedrock/stream/*.bin"):
    put("eventstream_decoder", name, select(9) + body)
    put("stream_translator", "bedrock-" + name, select(0x11) + select(17) + body)
for name, body in fixtures("sagemaker/stream/*.bin"):
    put("stream_translator", "sagemaker-" + name, select(6) + select(29) + body)
    put("sagemaker_payload", name, select(5) + body)
for name, body in fixtures("sagemaker_tgi/stream/*.bin"):
    put("stream_translator", "sagemaker-tgi-" + name, select(6) + select(19) + body)
    put("eventstream_decoder", "sagemaker-tgi-" + name, select(1) + body)
for name, body in fixtures("sagemaker_tgi/stream/*.sse"):
    if ".out" not in name:
        put("stream_translator", "tgi-" + name, select(2) + select(23) + body)
put("sse_decoder", "small-limit", select(1) + select(1) + b"event: a\ndata: " + b"x" * 80 + b"\n\n")

# codecs
digest = "0" * 64
put("gateway_config", "min", '{"schema":%d,"max_body_bytes":1024,"models":[],"fault_injection":false}' % 1)
put("gateway_config", "full", '{"schema":1,"max_body_bytes":1024,"models":[{"name":"a","cluster":"ca","owned_by":"t","created":1}],'
    '"fault_injection":true}')
put("request_state", "chat", bytes([1, 1, 7]) + struct.pack("<Q", 57) + struct.pack("<H", 3) + b"key" + struct.pack("<H", 1) + b"b")
put("request_state", "converse", bytes([1, 5, 0]) + struct.pack("<H", 0) + struct.pack("<H", 2) + b"mm")
def hmap(pairs):
    out = struct.pack("<I", len(pairs))
    for n, v in pairs:
        out += struct.pack("<II", len(n), len(v))
    for n, v in pairs:
        out += n + b"\0" + v + b"\0"
    return out
put("wasm_header_map", "two", hmap([(b":status", b"200"), (b"content-type", b"application/json")]))
put("wasm_header_map", "binary", hmap([(b"x", b"\xff\x00")]))
for i, url in enumerate(["https://api.openai.com/v1/", "http://127.0.0.1:8081/demo/v1", "http://[::1]:99/x",
                         "http://user:pw@h/", "https://h:notaport/", "http://169.254.169.254/latest"]):
    put("upstream_url", str(i), url)
for i, url in enumerate(["https://api.openai.com/v1", "http://2852039166/latest", "http://0xA9FEA9FE/",
                         "http://[::ffff:169.254.169.254]/", "http://[fd00:ec2::254]/", "http://10-0-0-1.sslip.io/",
                         "http://metadata.google.internal/", "http://[fe80::1%25eth0]:80/", "http://localhost:9901/"]):
    put("egress_classifier", "url-" + str(i), select(0) + url.encode())
for name, ip in [("metadata", [169, 254, 169, 254]), ("loopback", [127, 0, 0, 1]), ("private", [10, 1, 2, 3]),
                 ("public", [52, 94, 236, 248]), ("zero", [0, 0, 0, 0]), ("multicast", [239, 1, 2, 3])]:
    put("egress_classifier", "ip-" + name, select(1) + bytes(ip))


# key table (the encoder in wasm-tests/keytable_codec.py, written from the layout, not from the Rust)
import sys
sys.path.insert(0, os.path.join(ROOT, "..", "wasm-tests"))
import keytable_codec as kt  # noqa: E402
shard = bytes([7]) + b"\x07" * 31
entries = [{"digest": bytes([7]) + bytes([i]) * 31, "id": f"key_{i}", "models": ["a", "b"] if i % 2 else None,
            "expires_at": 10 if i % 3 == 0 else None, "role": "admin" if i == 4 else "user"} for i in range(1, 9)]
put("key_shard", "shard-7", select(7) + kt.encode_shard(7, 3, 9, entries))
put("key_shard", "shard-empty", select(0) + kt.encode_shard(0, 1, 1, []))
put("key_shard", "manifest", kt.encode_manifest([(1, i) for i in range(256)]))
put("key_shard", "update", kt.encode_update([kt.encode_shard(1, 1, 1, []), kt.encode_shard(7, 3, 9, entries[:2])]))
