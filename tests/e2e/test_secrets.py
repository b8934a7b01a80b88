"""No secret shows in Envoy's config dump, the logs or (in plain text) the data dir.

Run last, so every key the session created is checked against everything it left behind.
"""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.e2e_order(2)


def found_in(text: str, secrets: dict[str, str]) -> list[str]:
    return [name for name, value in secrets.items() if value and value in text]


def test_config_dump_has_no_secrets(gw):
    dump = gw.config_dump()
    # A real dump, with the ECDS filter configuration (where the key table travels).
    assert "ClustersConfigDump" in dump and "EcdsConfigDump" in dump
    assert len(gw.secrets) >= 5
    leaked = found_in(dump, gw.secrets)
    assert not leaked, f"secrets in Envoy's /config_dump: {leaked}"


def test_logs_have_no_secrets(gw):
    paths = gw.log_paths
    assert paths
    for path in paths:
        text = path.read_text(errors="replace")
        leaked = found_in(text, gw.secrets)
        assert not leaked, f"secrets in {path.name}: {leaked}"


def test_data_dir_has_no_plaintext_secrets(gw):
    files = [p for p in gw.cp.data_dir.rglob("*") if p.is_file()]
    assert files, "the control plane stored nothing in its data dir"
    for path in files:
        data = path.read_bytes()
        leaked = [name for name, value in gw.secrets.items() if value.encode() in data]
        assert not leaked, f"secrets stored in plain text in {path.name}: {leaked}"
