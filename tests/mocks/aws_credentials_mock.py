#!/usr/bin/env python3
"""Mock AWS credential sources for Tollgate's tests: an STS and an ECS container credentials
endpoint, with the real wire shapes, so the control plane's aws-config chain runs unchanged
against them. Standard library plus botocore (SigV4 checks).

``MockSts`` (point ``AWS_ENDPOINT_URL_STS``, or a profile's ``endpoint_url``, at ``url``) answers
``POST /`` with the Query protocol's form body (``Action=...&Version=2011-06-15``):

- ``AssumeRoleWithWebIdentity`` (unsigned, as in AWS): ``RoleArn`` must be a role registered
  with ``allow_web_identity(role_arn, token)`` and ``WebIdentityToken`` that token, else a 403
  ``AccessDenied`` / ``InvalidIdentityToken`` ``ErrorResponse``.
- ``AssumeRole``: SigV4 for service ``sts`` in ``region`` with keys registered by
  ``allow_assume_role(role_arn, access_key, secret_key, session_token=None, external_id=None)``,
  verified with botocore's signer (``bedrock_mock.verify_sigv4``); a wrong key, signature or
  ``ExternalId`` is a 403.

Both answer an ``<...Response xmlns="https://sts.amazonaws.com/doc/2011-06-15/">`` document with
``AssumedRoleUser`` and ``Credentials`` (``AccessKeyId``, ``SecretAccessKey``, ``SessionToken``,
``Expiration`` ``lifetime_s`` seconds from now): the role's keys, returned by ``allow_*`` and
changed by ``rotate(role_arn)``. ``grants(action, role_arn)`` lists the calls answered, oldest
first (role, session name, external id, keys, expiry).

``MockEcsCredentials`` (point ``AWS_CONTAINER_CREDENTIALS_FULL_URI`` at ``url + path``) answers
``GET <path>`` with the container credentials JSON (``AccessKeyId``, ``SecretAccessKey``,
``Token``, ``Expiration``, ``RoleArn``) of ``current``; ``rotate()`` switches to new keys, and
``lifetime_s`` sets how far out ``Expiration`` is. When ``auth_token`` is set, the request must
carry it in ``Authorization`` (``AWS_CONTAINER_AUTHORIZATION_TOKEN``).

Both record requests (``requests``) and take the common faults (``set_faults(status=500,
count=2)``: the next 2 calls fail).
"""

from __future__ import annotations

import json
import secrets
import time
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any
from urllib.parse import parse_qs
from xml.sax.saxutils import escape

from mocks.base import MockHandler, MockServer
from mocks.bedrock_mock import BedrockError, verify_sigv4
from mocks.openai_mock import FaultState

STS_NS = "https://sts.amazonaws.com/doc/2011-06-15/"


@dataclass(frozen=True)
class Keys:
    access_key_id: str
    secret_access_key: str
    session_token: str

    @classmethod
    def fresh(cls) -> "Keys":
        return cls("ASIA" + secrets.token_hex(8).upper(), secrets.token_urlsafe(30),
                   "IQoJb3JpZ2luX2Vj" + secrets.token_urlsafe(48))

    def values(self) -> tuple[str, str, str]:
        return (self.access_key_id, self.secret_access_key, self.session_token)


def iso8601(unix: float) -> str:
    return datetime.fromtimestamp(int(unix), tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


class _Handler(MockHandler):
    """Errors as AWS sends them for the Query protocol (STS) and as JSON for ECS."""

    server_version = "aws-credentials-mock/1"
    mock_name = "aws-credentials-mock"
    mock_errors = (BedrockError,)
    announce_close = False

    def _error_response(self, code: int, message: str | None) -> None:
        self._send_aws_error(BedrockError(code, "InvalidRequest", message or "Bad request."))

    def _answer_error(self, err: BaseException) -> None:
        assert isinstance(err, BedrockError)
        self._send_aws_error(err)

    def _answer_internal_error(self) -> None:
        self._send_aws_error(BedrockError(500, "InternalFailure", "The mock had an internal error."))

    def _body_error(self, reason: str) -> Exception:
        return BedrockError(400, "InvalidRequest", f"Malformed body ({reason}).")

    def _request_id_header(self) -> tuple[str, str]:
        return "x-amzn-RequestId", str(uuid.uuid4())

    def _parse_fault_spec(self, body: bytes) -> Any:
        return json.loads(body or b"{}")

    def _control_not_found(self, path: str) -> Exception:
        return BedrockError(404, "UnknownOperation", f"Unknown path {path}")

    def _send_aws_error(self, err: BedrockError) -> None:
        self.server.mock.send_error(self, err)

    def _serve_api(self, path: str, body: bytes) -> None:
        mock = self.server.mock
        status, delay_ms, _ = mock._take_fault()
        if delay_ms:
            time.sleep(delay_ms / 1000.0)
        if status is not None:
            raise BedrockError(status, "ServiceUnavailable", f"Mock fault {status}.")
        mock.serve(self, path, body)


class MockSts(MockServer):
    thread_name = "mock-sts"
    handler_class = _Handler
    fault_class = FaultState

    def __init__(self, region: str = "us-east-1", lifetime_s: int = 3600, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.region = region
        self.lifetime_s = lifetime_s
        self._web_identity: dict[str, str] = {}
        self._assume_role: dict[str, dict[str, str | None]] = {}
        self._keys: dict[str, Keys] = {}
        self.issued: list[dict[str, Any]] = []

    def allow_web_identity(self, role_arn: str, token: str) -> Keys:
        """Let `token` assume `role_arn`; returns the keys its grants carry."""
        with self._lock:
            self._web_identity[role_arn] = token
            return self._keys.setdefault(role_arn, Keys.fresh())

    def allow_assume_role(self, role_arn: str, access_key: str, secret_key: str,
                          session_token: str | None = None, external_id: str | None = None) -> Keys:
        """Let these keys (and `external_id`) assume `role_arn`; returns the keys it grants."""
        with self._lock:
            self._assume_role[role_arn] = {"access_key": access_key, "secret_key": secret_key,
                                           "session_token": session_token,
                                           "external_id": external_id}
            return self._keys.setdefault(role_arn, Keys.fresh())

    def rotate(self, role_arn: str) -> Keys:
        """Grant new keys for `role_arn` from now on; returns them."""
        keys = Keys.fresh()
        with self._lock:
            self._keys[role_arn] = keys
        return keys

    def grants(self, action: str, role_arn: str | None = None) -> list[dict[str, Any]]:
        with self._lock:
            return [g for g in self.issued if g["action"] == action
                    and (role_arn is None or g["role_arn"] == role_arn)]

    def send_error(self, handler: _Handler, err: BedrockError) -> None:
        kind = "Sender" if err.status < 500 else "Receiver"
        xml = (f'<ErrorResponse xmlns="{STS_NS}"><Error><Type>{kind}</Type>'
               f"<Code>{escape(err.error_type)}</Code><Message>{escape(err.message)}</Message>"
               f"</Error><RequestId>{uuid.uuid4()}</RequestId></ErrorResponse>")
        handler._send_raw(err.status, xml.encode(), "text/xml")

    def serve(self, handler: _Handler, path: str, body: bytes) -> None:
        if handler.command != "POST" or path != "/":
            raise BedrockError(404, "UnknownOperation", "Unknown operation.")
        form = {k: v[0] for k, v in parse_qs(body.decode(), keep_blank_values=True).items()}
        action, role_arn = form.get("Action"), form.get("RoleArn", "")
        session = form.get("RoleSessionName", "")
        if not session:
            raise BedrockError(400, "ValidationError", "RoleSessionName is required.")
        with self._lock:
            web_token = self._web_identity.get(role_arn)
            grant = self._assume_role.get(role_arn)
        if action == "AssumeRoleWithWebIdentity":
            if web_token is None:
                raise BedrockError(403, "AccessDenied", "Not authorized to perform "
                                   "sts:AssumeRoleWithWebIdentity")
            if form.get("WebIdentityToken") != web_token:
                raise BedrockError(400, "InvalidIdentityToken", "The web identity token that "
                                   "was passed could not be validated by AWS.")
            extra = ("<SubjectFromWebIdentityToken>system:serviceaccount:tollgate:gateway"
                     "</SubjectFromWebIdentityToken><Audience>sts.amazonaws.com</Audience>"
                     "<Provider>arn:aws:iam::123456789012:oidc-provider/oidc.eks.test</Provider>")
        elif action == "AssumeRole":
            if grant is None:
                raise BedrockError(403, "AccessDenied", "Not authorized to perform sts:AssumeRole")
            verify_sigv4(handler.command, handler.path, handler.headers.items(), body,
                         access_key=str(grant["access_key"]), secret_key=str(grant["secret_key"]),
                         session_token=grant["session_token"], region=self.region,
                         service_name="sts")
            if form.get("ExternalId") != grant["external_id"]:
                raise BedrockError(403, "AccessDenied", "Not authorized to perform sts:AssumeRole")
            extra = ""
        else:
            raise BedrockError(400, "InvalidAction", f"Could not find operation {action}.")
        expires = time.time() + self.lifetime_s
        with self._lock:
            keys = self._keys[role_arn]
            self.issued.append({"action": action, "role_arn": role_arn, "session": session,
                                "keys": keys, "expires": expires,
                                "external_id": form.get("ExternalId")})
        role_name = role_arn.rsplit("/", 1)[-1]
        xml = (f'<{action}Response xmlns="{STS_NS}"><{action}Result>{extra}'
               f"<AssumedRoleUser><AssumedRoleId>AROA{secrets.token_hex(8).upper()}:"
               f"{escape(session)}</AssumedRoleId><Arn>arn:aws:sts::123456789012:assumed-role/"
               f"{escape(role_name)}/{escape(session)}</Arn></AssumedRoleUser>"
               f"<Credentials><AccessKeyId>{keys.access_key_id}</AccessKeyId>"
               f"<SecretAccessKey>{keys.secret_access_key}</SecretAccessKey>"
               f"<SessionToken>{keys.session_token}</SessionToken>"
               f"<Expiration>{iso8601(expires)}</Expiration></Credentials>"
               f"</{action}Result><ResponseMetadata><RequestId>{uuid.uuid4()}</RequestId>"
               f"</ResponseMetadata></{action}Response>")
        handler._send_raw(200, xml.encode(), "text/xml")


class MockEcsCredentials(MockServer):
    thread_name = "mock-ecs-credentials"
    handler_class = _Handler
    fault_class = FaultState

    def __init__(self, path: str = "/v2/credentials/task-role", lifetime_s: int = 3600,
                 auth_token: str | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.path = path
        self.lifetime_s = lifetime_s
        self.auth_token = auth_token
        self._current = Keys.fresh()
        self.served: list[tuple[Keys, float]] = []  # (keys, expiry) per answer

    @property
    def full_uri(self) -> str:
        return self.url + self.path

    @property
    def current(self) -> Keys:
        with self._lock:
            return self._current

    def rotate(self) -> Keys:
        """Serve new keys from now on; returns them."""
        keys = Keys.fresh()
        with self._lock:
            self._current = keys
        return keys

    def send_error(self, handler: _Handler, err: BedrockError) -> None:
        handler._send_json(err.status, {"code": err.error_type, "message": err.message})

    def serve(self, handler: _Handler, path: str, body: bytes) -> None:
        if handler.command != "GET" or path != self.path:
            raise BedrockError(404, "NotFound", "No such credentials.")
        if self.auth_token is not None and handler.headers.get("Authorization") != self.auth_token:
            raise BedrockError(401, "Unauthorized", "Missing or wrong authorization token.")
        with self._lock:
            keys = self._current
            expires = time.time() + self.lifetime_s
            self.served.append((keys, expires))
        handler._send_json(200, {
            "RoleArn": "arn:aws:iam::123456789012:role/tollgate-task",
            "AccessKeyId": keys.access_key_id,
            "SecretAccessKey": keys.secret_access_key,
            "Token": keys.session_token,
            "Expiration": iso8601(expires),
        })
