"""Where the operator's API credentials come from: ONE loader for kopf's client and ours.

The ``kubernetes`` package does the loading (in-cluster ServiceAccount token and CA
first, then the current KUBECONFIG context: tokens, exec plugins such as GKE's
``gke-gcloud-auth-plugin``, client certificates, basic auth). We never look its
settings up by key name: the header comes from ``Configuration.auth_settings()``, the
same call the generated client makes for every request, so a renamed key upstream
(``authorization`` became ``BearerToken``) cannot turn us anonymous again.

Tokens rotate: kubelet renews a bound token file about hourly, exec plugins hand out
tokens with an expiry. ``auth_settings()`` runs the loader's refresh hook (the
in-cluster loader re-reads the file each minute; the kubeconfig loader re-runs an
expired exec plugin), and :meth:`Credentials.reload` starts over after a 401.
"""

from __future__ import annotations

import dataclasses
import os
import ssl
from collections.abc import Mapping
from typing import Any

from pipeline_runtime.contracts import DEFAULT_SERVICEACCOUNT_DIR, ENV_SERVICEACCOUNT_DIR


class NoCredentials(Exception):
    """Neither in-cluster credentials nor a usable kubeconfig were found."""


@dataclasses.dataclass
class Credentials:
    """A loaded ``kubernetes.client.Configuration`` and how it was found."""

    config: Any
    """The ``kubernetes.client.Configuration`` the loader filled in."""
    source: str
    """``in-cluster`` or ``kubeconfig``: for the start-up log line."""
    environ: Mapping[str, str]
    """The environment it was loaded from (reload uses it again)."""

    @property
    def host(self) -> str:
        return str(self.config.host).rstrip("/")

    def headers(self) -> dict[str, str]:
        """The auth headers of one request, as the ``kubernetes`` client would send them now."""
        out: dict[str, str] = {}
        for setting in self.config.auth_settings().values():
            if setting.get("in") == "header" and setting.get("value"):
                out[str(setting["key"]).title()] = str(setting["value"])
        if "Authorization" not in out and self.config.username and self.config.password:
            basic = self.config.get_basic_auth_token()
            if basic:
                out["Authorization"] = str(basic)
        return out

    def ssl_context(self) -> ssl.SSLContext | None:
        """TLS settings for an https server (None for plain http)."""
        cfg = self.config
        if not self.host.startswith("https"):
            return None
        ctx = ssl.create_default_context(cafile=cfg.ssl_ca_cert) if cfg.ssl_ca_cert else ssl.create_default_context()
        if cfg.cert_file:
            ctx.load_cert_chain(cfg.cert_file, cfg.key_file)
        if not cfg.verify_ssl:
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
        return ctx

    def reload(self) -> Credentials:
        """Load again from the same environment (after a 401: the token may have rotated)."""
        return load(self.environ)

    def connection_info(self) -> Any:
        """The same credentials for kopf's own client (a ``@kopf.on.login`` result)."""
        import kopf

        cfg = self.config
        scheme = token = None
        header = self.headers().get("Authorization")
        if header:
            scheme, _, token = header.partition(" ")
        return kopf.ConnectionInfo(
            server=self.host,
            ca_path=cfg.ssl_ca_cert or None,
            insecure=not cfg.verify_ssl,
            scheme=scheme or None,
            token=token or None,
            certificate_path=cfg.cert_file or None,
            private_key_path=cfg.key_file or None,
            default_namespace=None,
        )


def service_account_dir(environ: Mapping[str, str]) -> str:
    """Where the pod's token and CA are mounted (``RESPAWN_SERVICEACCOUNT_DIR`` overrides)."""
    return environ.get(ENV_SERVICEACCOUNT_DIR) or DEFAULT_SERVICEACCOUNT_DIR


def load(environ: Mapping[str, str] | None = None) -> Credentials:
    """In-cluster credentials when running in a pod, else the current KUBECONFIG context."""
    import kubernetes
    from kubernetes.config.incluster_config import InClusterConfigLoader

    env = dict(os.environ if environ is None else environ)
    cfg = kubernetes.client.Configuration()
    sa = service_account_dir(env)
    if env.get("KUBERNETES_SERVICE_HOST"):
        try:
            InClusterConfigLoader(
                token_filename=os.path.join(sa, "token"), cert_filename=os.path.join(sa, "ca.crt"), environ=env
            ).load_and_set(cfg)  # type: ignore[no-untyped-call]
            return Credentials(cfg, "in-cluster", env)
        except kubernetes.config.ConfigException:
            pass  # e.g. automountServiceAccountToken: false; a kubeconfig may still be given
    try:
        kubernetes.config.load_kube_config(
            config_file=env.get("KUBECONFIG") or None,  # type: ignore[no-untyped-call]
            client_configuration=cfg,
        )
    except (kubernetes.config.ConfigException, OSError) as exc:
        raise NoCredentials(
            f"no Kubernetes credentials: not in a pod (no token in {sa}) and no usable kubeconfig ({exc}); "
            "run in a pod with a ServiceAccount, or set KUBECONFIG"
        ) from exc
    return Credentials(cfg, "kubeconfig", env)
