"""Mock Amazon SageMaker Runtime endpoint (test support), serving one of two containers:

``payload="openai"`` (default), an OpenAI-style chat container:

- ``POST /endpoints/{name}/invocations``: the container's OpenAI ``chat.completion`` JSON.
- ``POST /endpoints/{name}/invocations-response-stream``: the container's OpenAI SSE stream.

``payload="tgi"``, a Hugging Face Text Generation Inference container (as the SageMaker
Hugging Face LLM container serves it), with the prompt template it expects
(``prompt_template``: ``llama3``, ``chatml``, ``mistral`` or ``plain``):

- the request must be TGI's ``{"inputs", "parameters", "stream"}`` and pass TGI's validation
  (``temperature`` > 0, 0 < ``top_p`` < 1, ``max_new_tokens`` > 0, at most 4 stop sequences, a
  non-negative integer ``seed``, no ``decoder_input_details`` when streaming); the mock is
  stricter than TGI in refusing unknown keys and a ``stream`` flag that does not match the
  path. ``inputs`` must be a well-formed prompt of the template (no beginning-of-sequence token:
  the tokenizer adds it), ending with the assistant's turn. A refused request is answered as
  SageMaker answers a container's 422: ``424 ModelError``.
- the answer is ``ANSWER_PREFIX_TGI + "naïve " + <the last user message>``, one token per word
  (plus the template's end-of-turn token, ``special: true``), cut by ``max_new_tokens``
  (``finish_reason: length``) and by ``stop`` (``stop_sequence``, the stop text kept, as TGI
  does); ``eos_token`` otherwise. Prompt tokens: ``prompt_tokens(inputs)``.
- ``/invocations``: ``[{"generated_text", "details": {finish_reason, generated_tokens, seed,
  prefill, tokens}}]`` (``prefill`` = one entry per prompt token when ``decoder_input_details``);
  without ``return_full_text: false`` the prompt is echoed first, as TGI does for
  ``text-generation`` models.
- ``/invocations-response-stream``: TGI's SSE (``data:{"index", "token", "generated_text":
  null, "details": null}``, the last event with ``generated_text`` and ``details``
  ``{finish_reason, generated_tokens, seed, input_length}``; ``input_length`` left out when
  ``stream_input_length`` is false, as older TGI versions do). ``truncate_stream = True`` drops
  the last event (a stream cut short).

Both containers' streams are framed exactly as SageMaker Runtime frames
``InvokeEndpointWithResponseStream``, following botocore's service model
``botocore/data/sagemaker-runtime/2017-05-13/service-2.json``: ``ResponseStream`` is an event
stream whose ``PayloadPart`` has one member, ``Bytes``, marked ``"eventpayload": true`` (a blob),
so each frame (``:message-type: event``, ``:event-type: PayloadPart``, ``:content-type:
application/octet-stream``) carries a raw slice of the container's output as its payload — no
JSON, no base64. The slices are cut at awkward places on purpose: inside an SSE event and inside
a UTF-8 character, several events per part. ``stream_failure = "ModelStreamError"`` (or
``"InternalStreamFailure"``) ends the stream after about half of the parts with that exception
frame (``:message-type: exception``, ``:exception-type``, JSON payload ``{"Message",
"ErrorCode"}`` / ``{"Message"}`` as the modelled shapes). Errors before a response are answered
as the service model's error shapes, with ``x-amzn-errortype``: a container that refuses a
request (or ``container_error = (status, body)``) is ``424 ModelError`` with ``{"Message",
"OriginalStatusCode", "OriginalMessage", "LogStreamArn", "ErrorCode"}``; an unknown endpoint is
``400 ValidationError``. ``tests/unit/test_sagemaker_mock.py`` checks all of it with boto3's own
``sagemaker-runtime`` client. Every request must carry a valid SigV4 signature for service
``sagemaker`` (checked with botocore's signer via ``bedrock_mock.verify_sigv4``); otherwise 403
as AWS answers. ``requests`` records what arrived (method, path, headers, body).
"""

from __future__ import annotations

import json
import re
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler
from typing import Any
from urllib.parse import unquote, urlsplit

try:
    from .base import LastUsage, _Server, note_request, write_chunk
    from .bedrock_mock import BedrockError, encode_frame, verify_sigv4
    from .openai_mock import _maybe_tool_call
except ImportError:  # run as a script / imported without the package
    from base import LastUsage, _Server, note_request, write_chunk  # type: ignore[no-redef]
    from bedrock_mock import BedrockError, encode_frame, verify_sigv4  # type: ignore[no-redef]
    from openai_mock import _maybe_tool_call  # type: ignore[no-redef]

ANSWER_PREFIX = "sagemaker says: "
ANSWER_PREFIX_TGI = "tgi says: "


def _answer(req: dict[str, Any]) -> tuple[str, dict[str, int]]:
    messages = req.get("messages") or []
    last = next((m for m in reversed(messages) if isinstance(m, dict) and m.get("role") == "user"), {})
    content = last.get("content")
    text = content if isinstance(content, str) else " ".join(
        p.get("text", "") for p in content or [] if isinstance(p, dict))
    answer = ANSWER_PREFIX + "naïve " + text
    prompt = sum(len(str(m.get("content", "")).split()) for m in messages if isinstance(m, dict))
    completion = len(answer.split())
    return answer, {"prompt_tokens": prompt, "completion_tokens": completion,
                    "total_tokens": prompt + completion}


def _tool_call(req: dict[str, Any]) -> dict[str, Any] | None:
    """An OpenAI-style container (vLLM, LMI) with tools answers a weather question with a
    function call, as the OpenAI mock does."""
    messages = [m for m in req.get("messages") or [] if isinstance(m, dict)]
    if not messages:
        return None
    content = messages[-1].get("content")
    text = content if isinstance(content, str) else ""
    return _maybe_tool_call(req, messages, text)


def tool_call_body(req: dict[str, Any], call: dict[str, Any],
                   stream: bool) -> tuple[bytes, dict[str, int]]:
    prompt = sum(len(str(m.get("content", "")).split()) for m in req["messages"])
    completion = len(call["function"]["arguments"].replace('"', " ").split())
    usage = {"prompt_tokens": prompt, "completion_tokens": completion,
             "total_tokens": prompt + completion}
    base = {"id": "chatcmpl-smtool", "created": int(time.time()), "model": req.get("model", "")}
    if not stream:
        return json.dumps({**base, "object": "chat.completion", "usage": usage, "choices": [{
            "index": 0, "finish_reason": "tool_calls",
            "message": {"role": "assistant", "content": None, "tool_calls": [call]}}]}).encode(), usage
    base["object"] = "chat.completion.chunk"
    first = {"index": 0, "id": call["id"], "type": "function",
             "function": {"name": call["function"]["name"], "arguments": ""}}
    args = call["function"]["arguments"]
    deltas = [{"role": "assistant", "content": None, "tool_calls": [first]}] + [
        {"tool_calls": [{"index": 0, "function": {"arguments": args[i:i + 8]}}]}
        for i in range(0, len(args), 8)]
    events = [{**base, "choices": [{"index": 0, "delta": d, "finish_reason": None}]} for d in deltas]
    events.append({**base, "choices": [{"index": 0, "delta": {}, "finish_reason": "tool_calls"}]})
    if (req.get("stream_options") or {}).get("include_usage"):
        events.append({**base, "choices": [], "usage": usage})
    out = b"".join(b"data: " + json.dumps(e).encode() + b"\n\n" for e in events)
    return out + b"data: [DONE]\n\n", usage


def sse_body(req: dict[str, Any]) -> bytes:
    answer, usage = _answer(req)
    cid = "chatcmpl-sm" + uuid.uuid4().hex[:12]
    base = {"id": cid, "object": "chat.completion.chunk", "created": int(time.time()),
            "model": req.get("model", "")}
    events = [{**base, "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""},
                                    "finish_reason": None}]}]
    for i, word in enumerate(answer.split(" ")):
        events.append({**base, "choices": [{"index": 0, "delta": {"content": (" " if i else "") + word},
                                            "finish_reason": None}]})
    events.append({**base, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
    if (req.get("stream_options") or {}).get("include_usage"):
        events.append({**base, "choices": [], "usage": usage})
    out = b"".join(b"data: " + json.dumps(e, ensure_ascii=False).encode() + b"\n\n" for e in events)
    return out + b"data: [DONE]\n\n"


PAYLOAD_PART_HEADERS = {":event-type": "PayloadPart", ":content-type": "application/octet-stream",
                        ":message-type": "event"}


def payload_parts(stream: bytes, sizes: tuple[int, ...] = (7, 53, 3, 120, 1)) -> list[bytes]:
    """Cuts the container stream into parts of cycling sizes (mid-event), also inside every
    multi-byte UTF-8 character, each framed as a ``PayloadPart`` whose payload is the slice
    itself (``Bytes`` is the event payload)."""
    cuts, pos, i = set(), 0, 0
    while pos < len(stream):
        pos = min(pos + sizes[i % len(sizes)], len(stream))
        cuts.add(pos)
        i += 1
    cuts.update(p for p in range(1, len(stream))
                if stream[p] & 0xC0 == 0x80 and stream[p - 1] & 0xC0 == 0xC0)
    bounds = [0, *sorted(cuts)]
    return [encode_frame(PAYLOAD_PART_HEADERS, stream[a:b]) for a, b in zip(bounds, bounds[1:])]


STREAM_FAILURES = {
    "ModelStreamError": {"Message": "Your model did not finish sending the response in time.",
                         "ErrorCode": "ModelInvocationTimeExceeded"},
    "InternalStreamFailure": {"Message": "The stream processing failed because of an unknown error. "
                                         "Try your request again."},
}


def exception_frame(kind: str) -> bytes:
    """A ``ResponseStream`` exception member as SageMaker sends it mid-stream."""
    return encode_frame({":exception-type": kind, ":content-type": "application/json",
                         ":message-type": "exception"}, json.dumps(STREAM_FAILURES[kind]).encode())


class SageMakerError(Exception):
    """An error shape of the service model: its status, ``x-amzn-errortype`` and JSON members."""

    def __init__(self, status: int, error_type: str, members: dict[str, Any]) -> None:
        super().__init__(members.get("Message", ""))
        self.status = status
        self.error_type = error_type
        self.members = members


def model_error(original_status: int, original_message: str, endpoint: str) -> SageMakerError:
    """``424 ModelError``: the container answered ``original_status``."""
    kind = "client" if original_status < 500 else "server"
    return SageMakerError(424, "ModelError", {
        "ErrorCode": f"{kind.upper()}_ERROR_FROM_MODEL",
        "Message": f"Received {kind} error ({original_status}) from primary with message "
                   f"\"{original_message}\". See https://us-east-1.console.aws.amazon.com/cloudwatch/home"
                   f"?region=us-east-1#logEventViewer:group=/aws/sagemaker/Endpoints/{endpoint} "
                   "in account 123456789012 for more information.",
        "OriginalStatusCode": original_status,
        "OriginalMessage": original_message,
        "LogStreamArn": f"arn:aws:logs:us-east-1:123456789012:log-group:/aws/sagemaker/Endpoints/{endpoint}",
    })


# ---- TGI container ---------------------------------------------------------------------------

TGI_PARAMETERS = {"best_of", "temperature", "repetition_penalty", "frequency_penalty", "top_k",
                  "top_p", "typical_p", "do_sample", "max_new_tokens", "return_full_text", "stop",
                  "truncate", "watermark", "details", "decoder_input_details", "seed",
                  "top_n_tokens", "grammar", "adapter_id"}

# (turn regex, assistant prompt the inputs must end with, end-of-turn token, forbidden prefix)
TEMPLATES: dict[str, tuple[str, str, str, str | None]] = {
    "llama3": (r"<\|start_header_id\|>(system|user|assistant)<\|end_header_id\|>\n\n(.*?)<\|eot_id\|>",
               "<|start_header_id|>assistant<|end_header_id|>\n\n", "<|eot_id|>", "<|begin_of_text|>"),
    "chatml": (r"<\|im_start\|>(system|user|assistant)\n(.*?)<\|im_end\|>\n",
               "<|im_start|>assistant\n", "<|im_end|>", None),
    "mistral": (r"\[INST\] (.*?) \[/INST\]", " [/INST]", "</s>", "<s>"),
    "plain": ("", "", "</s>", None),
}


def _tgi_error(message: str) -> SageMakerError:
    """A container 422, as SageMaker reports it (424 ModelError)."""
    body = json.dumps({"error": message, "error_type": "validation"})
    return model_error(422, body, "tgi")


def prompt_tokens(inputs: str) -> int:
    """The mock tokenizer: words and punctuation, plus the beginning-of-sequence token."""
    return len(re.findall(r"\w+|[^\w\s]", inputs)) + 1


def last_user_text(inputs: str, template: str) -> str:
    """The last user message of a prompt rendered with `template` (422 if malformed)."""
    turn_re, assistant_prompt, _, forbidden_prefix = TEMPLATES[template]
    if template == "plain":
        return inputs.split("\n\n")[-1]
    if forbidden_prefix and inputs.startswith(forbidden_prefix):
        raise _tgi_error(f"the prompt starts with {forbidden_prefix}: the tokenizer adds it, "
                         "so the model would see it twice")
    if not inputs.endswith(assistant_prompt):
        raise _tgi_error(f"the {template} prompt does not end with the assistant's turn")
    if template == "mistral":
        users = re.findall(turn_re, inputs, flags=re.S)
        if not users or not inputs.startswith("[INST] "):
            raise _tgi_error("not a mistral prompt")
        return users[-1].split("\n\n")[-1]
    body = inputs[:-len(assistant_prompt)]
    turns = re.findall(turn_re, body, flags=re.S)
    if re.sub(turn_re, "", body, flags=re.S) != "" or not turns:
        raise _tgi_error(f"not a well-formed {template} prompt")
    users = [text for role, text in turns if role == "user"]
    if not users:
        raise _tgi_error("the prompt has no user turn")
    return users[-1]


def validate_tgi(req: Any, stream_path: bool) -> dict[str, Any]:
    """TGI's request validation (stricter on unknown keys); returns the parameters."""
    if not isinstance(req, dict) or set(req) - {"inputs", "parameters", "stream"}:
        raise _tgi_error("expected {inputs, parameters, stream}")
    inputs = req.get("inputs")
    if not isinstance(inputs, str) or not inputs:
        raise _tgi_error("`inputs` cannot be empty")
    params = req.get("parameters", {})
    if not isinstance(params, dict) or set(params) - TGI_PARAMETERS:
        raise _tgi_error(f"unknown parameters {sorted(set(params) - TGI_PARAMETERS)}")
    if bool(req.get("stream", False)) != stream_path:
        raise _tgi_error("`stream` does not match the invocation path")

    def number(name: str) -> float | None:
        value = params.get(name)
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))):
            raise _tgi_error(f"`{name}` must be a number")
        return value

    temperature, top_p = number("temperature"), number("top_p")
    if temperature is not None and temperature <= 0:
        raise _tgi_error("`temperature` must be strictly positive")
    if top_p is not None and not 0 < top_p < 1:
        raise _tgi_error("`top_p` must be > 0.0 and < 1.0")
    max_new = params.get("max_new_tokens")
    if max_new is not None and (not isinstance(max_new, int) or isinstance(max_new, bool) or max_new <= 0):
        raise _tgi_error("`max_new_tokens` must be strictly positive")
    stop = params.get("stop", [])
    if not isinstance(stop, list) or not all(isinstance(x, str) for x in stop) or len(stop) > 4:
        raise _tgi_error("`stop` must be a list of at most 4 strings")
    seed = params.get("seed")
    if seed is not None and (not isinstance(seed, int) or isinstance(seed, bool) or seed < 0):
        raise _tgi_error("`seed` must be a non-negative integer")
    for name in ("do_sample", "details", "decoder_input_details", "return_full_text"):
        if name in params and not isinstance(params[name], bool):
            raise _tgi_error(f"`{name}` must be a boolean")
    if stream_path and params.get("decoder_input_details"):
        raise _tgi_error("decoder_input_details == True is not supported when streaming tokens")
    return params


def tgi_generation(mock: "MockSageMaker", req: dict[str, Any], params: dict[str, Any]) -> dict[str, Any]:
    """Tokens, text, finish reason and counts of the mock model's answer."""
    user = last_user_text(req["inputs"], mock.prompt_template)
    answer = ANSWER_PREFIX_TGI + "naïve " + user
    words = answer.split(" ")
    pieces = [(" " if i else "") + w for i, w in enumerate(words)]
    eos = TEMPLATES[mock.prompt_template][2]
    max_new = params.get("max_new_tokens") or 1000
    tokens: list[dict[str, Any]] = []
    text, finish = "", "eos_token"
    for i, piece in enumerate(pieces):
        if len(tokens) == max_new:
            finish = "length"
            break
        tokens.append({"id": 1000 + i, "text": piece, "logprob": -0.5, "special": False})
        text += piece
        if any(stop and stop in text for stop in params.get("stop", [])):
            finish = "stop_sequence"
            break
    else:
        if len(tokens) < max_new:
            tokens.append({"id": 2, "text": eos, "logprob": -0.01, "special": True})
        else:
            finish = "length"
    n_prompt = prompt_tokens(req["inputs"])
    if params.get("return_full_text") is not False:  # TGI's default for text-generation models
        text = req["inputs"] + text
    with mock.lock:
        mock.last_usage = {"prompt_tokens": n_prompt, "completion_tokens": len(tokens)}
    return {"tokens": tokens, "text": text, "finish_reason": finish,
            "generated_tokens": len(tokens), "prompt_tokens": n_prompt,
            "seed": params.get("seed")}


def tgi_generate_body(gen: dict[str, Any], params: dict[str, Any]) -> bytes:
    prefill = ([{"id": 128000 + i, "text": f"p{i}", "logprob": None if i == 0 else -1.0}
                for i in range(gen["prompt_tokens"])] if params.get("decoder_input_details") else [])
    details = {"finish_reason": gen["finish_reason"], "generated_tokens": gen["generated_tokens"],
               "seed": gen["seed"], "prefill": prefill, "tokens": gen["tokens"]}
    out: dict[str, Any] = {"generated_text": gen["text"]}
    if params.get("details"):
        out["details"] = details
    return json.dumps([out], ensure_ascii=False).encode()


def tgi_sse_body(mock: "MockSageMaker", gen: dict[str, Any]) -> bytes:
    events = []
    tokens = gen["tokens"]
    for i, token in enumerate(tokens):
        event: dict[str, Any] = {"index": i + 1, "token": token, "generated_text": None, "details": None}
        if i == len(tokens) - 1:
            details: dict[str, Any] = {"finish_reason": gen["finish_reason"],
                                       "generated_tokens": gen["generated_tokens"], "seed": gen["seed"]}
            if mock.stream_input_length:
                details["input_length"] = gen["prompt_tokens"]
            event["generated_text"] = gen["text"]
            event["details"] = details
            if mock.truncate_stream:
                break
        events.append(event)
    return b"".join(b"data:" + json.dumps(e, ensure_ascii=False).encode() + b"\n\n" for e in events)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        pass

    def do_POST(self) -> None:  # noqa: N802
        mock: MockSageMaker = self.server.mock  # type: ignore[assignment]
        note_request(self.headers)
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length)
        path = urlsplit(self.path).path
        with mock.lock:
            mock.requests.append({"method": "POST", "path": self.path,
                                  "headers": {k.lower(): v for k, v in self.headers.items()},
                                  "body": body})
        try:
            verify_sigv4("POST", self.path, list(self.headers.items()), body,
                         access_key=mock.access_key, secret_key=mock.secret_key,
                         session_token=None, region=mock.region, service_name="sagemaker")
            parts = path.split("/")
            if len(parts) != 4 or parts[1] != "endpoints" or parts[3] not in (
                    "invocations", "invocations-response-stream"):
                raise SageMakerError(404, "UnknownOperationException", {"message": f"unknown path {path}"})
            if unquote(parts[2]) != mock.endpoint:
                raise SageMakerError(400, "ValidationError", {
                    "Message": f"Endpoint {unquote(parts[2])} of account 123456789012 not found."})
            if mock.container_error is not None:
                status, message = mock.container_error
                raise model_error(status, message, mock.endpoint)
            try:
                req = json.loads(body)
            except ValueError:
                raise model_error(400, '{"error":"invalid JSON"}', mock.endpoint) from None
            stream = parts[3] == "invocations-response-stream"
            if mock.payload == "tgi":
                params = validate_tgi(req, stream)
                gen = tgi_generation(mock, req, params)
                if stream:
                    self._stream(mock, tgi_sse_body(mock, gen))
                else:
                    self._send(200, "application/json", tgi_generate_body(gen, params))
                return
            call = _tool_call(req)
            if call is not None:
                body, mock.last_usage = tool_call_body(req, call, stream)
                if stream:
                    self._stream(mock, body)
                else:
                    self._send(200, "application/json", body)
                return
            answer, usage = _answer(req)
            mock.last_usage = usage
            if stream:
                self._stream(mock, sse_body(req))
                return
            self._send(200, "application/json", json.dumps({
                "id": "chatcmpl-sm", "object": "chat.completion", "created": int(time.time()),
                "model": req.get("model", ""),
                "choices": [{"index": 0, "message": {"role": "assistant", "content": answer},
                             "finish_reason": "stop"}],
                "usage": usage}).encode())
        except BedrockError as err:  # the signature check's errors (generic AWS shapes)
            self._error(err.status, err.error_type, {"message": err.message})
        except SageMakerError as err:
            self._error(err.status, err.error_type, err.members)

    def _stream(self, mock: "MockSageMaker", container_output: bytes) -> None:
        """The container's output as ``PayloadPart`` frames; with ``stream_failure`` set, about
        half of them and then that exception frame."""
        frames = payload_parts(container_output)
        if mock.stream_failure is not None:
            frames = frames[:len(frames) // 2] + [exception_frame(mock.stream_failure)]
        self.send_response(200)
        self.send_header("Content-Type", "application/vnd.amazon.eventstream")
        self.send_header("X-Amzn-SageMaker-Content-Type", "text/event-stream")
        self.send_header("x-Amzn-Invoked-Production-Variant", "AllTraffic")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        for frame in frames:
            write_chunk(self.wfile, frame)
        write_chunk(self.wfile, b"")

    def _error(self, status: int, error_type: str, members: dict[str, Any]) -> None:
        payload = json.dumps(members).encode()
        self.send_response(status)
        self.send_header("x-amzn-errortype", error_type)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def _send(self, status: int, content_type: str, payload: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("x-Amzn-Invoked-Production-Variant", "AllTraffic")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)


class MockSageMaker:
    last_usage = LastUsage()
    def __init__(self, endpoint: str = "llm-endpoint", access_key: str = "AKIDMOCKSAGEMAKER",
                 secret_key: str = "mock-sagemaker-secret", region: str = "us-east-1",
                 payload: str = "openai", prompt_template: str = "llama3") -> None:
        if payload not in ("openai", "tgi") or prompt_template not in TEMPLATES:
            raise ValueError(f"unknown payload {payload!r} or prompt template {prompt_template!r}")
        self.payload = payload
        self.prompt_template = prompt_template
        self.stream_input_length = True  # TGI: report input_length in the final stream event
        self.truncate_stream = False  # TGI: drop the final stream event
        # "ModelStreamError" / "InternalStreamFailure": that exception frame half-way through a stream
        self.stream_failure: str | None = None
        # (status, body): the container fails every invocation, answered as 424 ModelError
        self.container_error: tuple[int, str] | None = None
        self.last_usage = None
        self.usage_log: list[dict[str, Any]] = []
        self.endpoint = endpoint
        self.access_key = access_key
        self.secret_key = secret_key
        self.region = region
        self.lock = threading.Lock()
        self.requests: list[dict[str, Any]] = []
        self._server = _Server(("127.0.0.1", 0), _Handler)
        self._server.mock = self  # type: ignore[assignment]
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        return self._server.server_address[1]

    def start(self) -> "MockSageMaker":
        if self._thread is None:
            self._thread = threading.Thread(target=self._server.serve_forever,
                                            kwargs={"poll_interval": 0.05}, daemon=True)
            self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
