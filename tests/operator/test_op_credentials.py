"""The operator's credentials, in every form users have, against the authenticating emulator.

Tested forms: an in-cluster ServiceAccount token + CA (and its rotation), a kubeconfig
token, a kubeconfig exec plugin (the GKE form), client certificate files (loaded and
handed to both clients; the emulator does not verify client certificates).
"""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from respawn_local.apiserver import ApiServerThread
from respawn_operator import credentials
from respawn_operator.kube import NODES, KubeClient


@pytest.fixture(scope="module")
def api() -> Iterator[ApiServerThread]:
    with ApiServerThread() as server:
        server.create({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "n1"}})
        yield server


def in_cluster(api: ApiServerThread, folder: Path, token: str) -> dict[str, str]:
    folder.mkdir(exist_ok=True)
    (folder / "token").write_text(token)
    assert api.ca_file is not None
    (folder / "ca.crt").write_bytes(Path(api.ca_file).read_bytes())
    host, port = api.url.removeprefix("https://").rsplit(":", 1)
    return {"KUBERNETES_SERVICE_HOST": host, "KUBERNETES_SERVICE_PORT": port, "RESPAWN_SERVICEACCOUNT_DIR": str(folder)}


def kubeconfig(api: ApiServerThread, path: Path, user: dict[str, Any]) -> dict[str, str]:
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "current-context": "c",
        "clusters": [{"name": "c", "cluster": {"server": api.url, "certificate-authority": api.ca_file}}],
        "users": [{"name": "u", "user": user}],
        "contexts": [{"name": "c", "context": {"cluster": "c", "user": "u"}}],
    }
    path.write_text(yaml.safe_dump(config))
    return {"KUBECONFIG": str(path)}


def get_node(creds: credentials.Credentials) -> dict[str, Any] | None:
    async def go() -> dict[str, Any] | None:
        client = KubeClient(creds.host, ssl_context=creds.ssl_context(), credentials=creds)
        try:
            return await client.get(NODES, "n1")
        finally:
            await client.close()

    return asyncio.run(go())


def test_in_cluster_token_and_ca(api: ApiServerThread, tmp_path: Path) -> None:
    creds = credentials.load(in_cluster(api, tmp_path / "sa", api.admin_token))
    assert creds.source == "in-cluster" and creds.host == api.url
    assert creds.headers() == {"Authorization": f"bearer {api.admin_token}"}
    node = get_node(creds)
    assert node is not None and node["metadata"]["name"] == "n1"
    info = creds.connection_info()
    assert (info.server, info.token, info.ca_path) == (api.url, api.admin_token, str(tmp_path / "sa" / "ca.crt"))


def test_a_rotated_token_is_picked_up_after_a_401(api: ApiServerThread, tmp_path: Path) -> None:
    old = api.call(api.server.tokens.issue, api.server.tokens.authenticate(f"Bearer {api.admin_token}", bool))
    creds = credentials.load(in_cluster(api, tmp_path / "sa", old))
    assert get_node(creds) is not None
    (tmp_path / "sa" / "token").write_text(api.admin_token)  # kubelet renewed the file ...
    api.call(api.server.tokens.revoke, old)  # ... and the old token expired
    assert get_node(creds) is not None  # 401, reload, retry


def test_kubeconfig_token(api: ApiServerThread, tmp_path: Path) -> None:
    creds = credentials.load(kubeconfig(api, tmp_path / "kc", {"token": api.admin_token}))
    assert creds.source == "kubeconfig"
    assert creds.headers() == {"Authorization": f"Bearer {api.admin_token}"}
    assert get_node(creds) is not None


def test_kubeconfig_exec_plugin(api: ApiServerThread, tmp_path: Path) -> None:
    plugin = tmp_path / "plugin.py"
    credential = {
        "apiVersion": "client.authentication.k8s.io/v1",
        "kind": "ExecCredential",
        "status": {"token": api.admin_token},
    }
    plugin.write_text(f"print({json.dumps(json.dumps(credential))})\n")
    user = {
        "exec": {
            "apiVersion": "client.authentication.k8s.io/v1",
            "command": sys.executable,
            "args": [str(plugin)],
            "interactiveMode": "Never",
        }
    }
    creds = credentials.load(kubeconfig(api, tmp_path / "kc", user))
    assert creds.headers() == {"Authorization": f"Bearer {api.admin_token}"}
    assert get_node(creds) is not None
    assert creds.connection_info().token == api.admin_token


def test_kubeconfig_client_certificate_files_reach_both_clients(api: ApiServerThread, tmp_path: Path) -> None:
    assert api.server.tls is not None
    user = {"client-certificate": api.server.tls.cert_file, "client-key": api.server.tls.key_file}
    creds = credentials.load(kubeconfig(api, tmp_path / "kc", user))
    assert creds.headers() == {}
    assert creds.ssl_context() is not None  # the certificate chain loads
    info = creds.connection_info()
    assert (info.certificate_path, info.private_key_path) == (api.server.tls.cert_file, api.server.tls.key_file)


def test_no_credentials_at_all_says_what_to_do(tmp_path: Path) -> None:
    with pytest.raises(credentials.NoCredentials, match="set KUBECONFIG"):
        credentials.load({"KUBECONFIG": str(tmp_path / "missing"), "RESPAWN_SERVICEACCOUNT_DIR": str(tmp_path)})
