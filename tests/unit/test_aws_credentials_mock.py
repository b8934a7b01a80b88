"""Tests of the mock STS and ECS credentials endpoint: botocore's own STS client must parse
their answers and be refused when it presents the wrong keys, token or external id."""

from __future__ import annotations

import botocore.session
import pytest
import requests
from botocore.config import Config
from botocore.exceptions import ClientError

from mocks.aws_credentials_mock import MockEcsCredentials, MockSts

REGION = "eu-west-1"
ROLE = "arn:aws:iam::123456789012:role/unit"


def sts_client(url: str, access_key: str = "AKIDUNIT", secret_key: str = "unit-secret"):
    return botocore.session.get_session().create_client(
        "sts", endpoint_url=url, region_name=REGION, aws_access_key_id=access_key,
        aws_secret_access_key=secret_key, config=Config(retries={"max_attempts": 1}))


@pytest.fixture()
def sts():
    with MockSts(region=REGION, lifetime_s=900) as m:
        yield m


def test_assume_role_with_web_identity(sts):
    keys = sts.allow_web_identity(ROLE, "jwt-token")
    out = sts_client(sts.url).assume_role_with_web_identity(
        RoleArn=ROLE, RoleSessionName="s1", WebIdentityToken="jwt-token")
    creds = out["Credentials"]
    assert (creds["AccessKeyId"], creds["SecretAccessKey"], creds["SessionToken"]) == keys.values()
    assert out["AssumedRoleUser"]["Arn"].endswith(":assumed-role/unit/s1")
    with pytest.raises(ClientError) as err:
        sts_client(sts.url).assume_role_with_web_identity(
            RoleArn=ROLE, RoleSessionName="s1", WebIdentityToken="other-token")
    assert err.value.response["Error"]["Code"] == "InvalidIdentityToken"


def test_assume_role_checks_the_signature_and_external_id(sts):
    keys = sts.allow_assume_role(ROLE, "AKIDUNIT", "unit-secret", external_id="ext")
    out = sts_client(sts.url).assume_role(RoleArn=ROLE, RoleSessionName="s2", ExternalId="ext")
    assert out["Credentials"]["AccessKeyId"] == keys.access_key_id
    assert sts.grants("AssumeRole", ROLE)[-1]["session"] == "s2"
    for kwargs, client in ((dict(ExternalId="wrong"), sts_client(sts.url)),
                           (dict(ExternalId="ext"), sts_client(sts.url, secret_key="bad")),
                           (dict(ExternalId="ext"), sts_client(sts.url, access_key="AKIDOTHER"))):
        with pytest.raises(ClientError) as err:
            client.assume_role(RoleArn=ROLE, RoleSessionName="s2", **kwargs)
        assert err.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403
    rotated = sts.rotate(ROLE)
    out = sts_client(sts.url).assume_role(RoleArn=ROLE, RoleSessionName="s3", ExternalId="ext")
    assert out["Credentials"]["AccessKeyId"] == rotated.access_key_id != keys.access_key_id


def test_ecs_endpoint_needs_its_token_and_rotates():
    with MockEcsCredentials(auth_token="tok", lifetime_s=60) as ecs:
        assert requests.get(ecs.full_uri, timeout=5).status_code == 401
        first = requests.get(ecs.full_uri, headers={"Authorization": "tok"}, timeout=5).json()
        assert first["AccessKeyId"] == ecs.current.access_key_id
        assert first["Expiration"].endswith("Z")
        ecs.rotate()
        second = requests.get(ecs.full_uri, headers={"Authorization": "tok"}, timeout=5).json()
        assert second["AccessKeyId"] == ecs.current.access_key_id != first["AccessKeyId"]
        ecs.set_faults(status=500, count=1)
        assert requests.get(ecs.full_uri, headers={"Authorization": "tok"}, timeout=5).status_code == 500
        assert requests.get(ecs.full_uri, headers={"Authorization": "tok"}, timeout=5).status_code == 200
