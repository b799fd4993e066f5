"""Authentication and RBAC authorization for the API emulator, as a real API server does them.

Authentication: a bearer token names a user. Two kinds exist, as on a cluster:

* static tokens (like ``--token-auth-file``): the emulator makes one for an admin in
  ``system:masters``, the group RBAC never refuses, for tests, kubectl and the pod
  simulator (which plays kubelet and the Job controller);
* ServiceAccount tokens from the TokenRequest API
  (``POST /api/v1/namespaces/NS/serviceaccounts/NAME/token``), which identify
  ``system:serviceaccount:NS:NAME`` and, when bound to a pod, carry the pod's name and
  uid in ``extra`` (``authentication.kubernetes.io/pod-name`` / ``pod-uid``) like the
  tokens kubelet mounts. A bound token dies with its pod, and every token expires.

A request without a token is refused with 401 (a cluster started with
``--anonymous-auth=false``); ``allow_anonymous`` makes it ``system:anonymous``, which
RBAC then judges like any other user.

Authorization: RBAC over the Roles, ClusterRoles, RoleBindings and ClusterRoleBindings
stored in the emulator: verbs, apiGroups, resources, ``resource/subresource``,
resourceNames, ``*`` wildcards, Role vs ClusterRole scope. Every authenticated user
may GET the discovery and health paths (the real ``system:discovery`` and
``system:public-info-viewer`` bindings). Not emulated (docs/emulator.md): ClusterRole
aggregation, the escalation check on writing roles, nonResourceURLs rules, the Node
authorizer, impersonation.
"""

from __future__ import annotations

import dataclasses
import secrets
import time
from collections.abc import Callable, Iterable
from typing import Any

Obj = dict[str, Any]

RBAC_GROUP = "rbac.authorization.k8s.io"
MASTERS = "system:masters"
EXTRA_POD_NAME = "authentication.kubernetes.io/pod-name"
EXTRA_POD_UID = "authentication.kubernetes.io/pod-uid"


@dataclasses.dataclass(frozen=True)
class UserInfo:
    """Who sent a request (``request.userInfo`` of an admission review)."""

    username: str
    """E.g. ``system:serviceaccount:team-a:respawn-runner``."""
    groups: tuple[str, ...] = ()
    """Groups, ``system:authenticated`` included."""
    extra: dict[str, tuple[str, ...]] = dataclasses.field(default_factory=dict)
    """Bound-token claims such as the pod's name and uid."""

    def as_dict(self) -> Obj:
        return {
            "username": self.username,
            "groups": list(self.groups),
            "extra": {k: list(v) for k, v in self.extra.items()},
        }


ANONYMOUS = UserInfo("system:anonymous", ("system:unauthenticated",))


def service_account_user(namespace: str, name: str, extra: dict[str, tuple[str, ...]] | None = None) -> UserInfo:
    return UserInfo(
        f"system:serviceaccount:{namespace}:{name}",
        ("system:serviceaccounts", f"system:serviceaccounts:{namespace}", "system:authenticated"),
        dict(extra or {}),
    )


@dataclasses.dataclass(frozen=True)
class RequestAttributes:
    """What RBAC judges: the verb and the object a request acts on."""

    verb: str
    namespace: str | None = None
    group: str = ""
    resource: str = ""
    subresource: str = ""
    name: str = ""
    path: str = ""
    """Set (and resource empty) for non-resource requests such as /version."""

    def describe(self) -> str:
        """The wording of the real server's 403 message."""
        if not self.resource:
            return f'cannot {self.verb} path "{self.path}"'
        res = self.resource + (f"/{self.subresource}" if self.subresource else "")
        text = f'cannot {self.verb} resource "{res}" in API group "{self.group}"'
        return text + (f' in the namespace "{self.namespace}"' if self.namespace else " at the cluster scope")


@dataclasses.dataclass
class _Token:
    user: UserInfo
    expires: float
    bound_uid: str | None


class TokenAuthority:
    """Issues and checks bearer tokens (opaque random strings, not JWTs: clients never look inside)."""

    def __init__(self, allow_anonymous: bool = False) -> None:
        self.allow_anonymous = allow_anonymous
        self._tokens: dict[str, _Token] = {}
        self.admin_token = self.issue(UserInfo("kubernetes-admin", (MASTERS, "system:authenticated")))

    def issue(self, user: UserInfo, expiration_seconds: float = 10 * 365 * 86400, bound_uid: str | None = None) -> str:
        token = secrets.token_urlsafe(32)
        self._tokens[token] = _Token(user, time.time() + expiration_seconds, bound_uid)
        return token

    def revoke(self, token: str) -> None:
        self._tokens.pop(token, None)

    def authenticate(self, header: str | None, alive: Callable[[str], bool]) -> UserInfo | None:
        """The user of an ``Authorization`` header; None: 401. ``alive(uid)`` says whether a bound object exists."""
        if not header:
            return ANONYMOUS if self.allow_anonymous else None
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer":
            return None
        entry = self._tokens.get(token.strip())
        if entry is None or entry.expires < time.time():
            return None
        if entry.bound_uid is not None and not alive(entry.bound_uid):
            return None
        return entry.user


def _matches(values: Iterable[str], wanted: str) -> bool:
    values = list(values or [])
    return "*" in values or wanted in values


def _resource_matches(rule_resources: Iterable[str], attrs: RequestAttributes) -> bool:
    combined = attrs.resource + (f"/{attrs.subresource}" if attrs.subresource else "")
    for r in rule_resources or []:
        if r == "*" or r == combined or (attrs.subresource and r == f"*/{attrs.subresource}"):
            return True
    return False


def rule_allows(rule: Obj, attrs: RequestAttributes) -> bool:
    """One PolicyRule against one request (rbac/v1 ``RuleAllows``)."""
    if not _matches(rule.get("verbs") or [], attrs.verb):
        return False
    if not attrs.resource:
        return False  # nonResourceURLs rules are not emulated; discovery is allowed elsewhere
    if not _matches(rule.get("apiGroups") or [], attrs.group) or not _resource_matches(
        rule.get("resources") or [], attrs
    ):
        return False
    names = rule.get("resourceNames") or []
    return not names or (bool(attrs.name) and attrs.name in names)


def subject_matches(subject: Obj, user: UserInfo, binding_namespace: str | None) -> bool:
    kind = subject.get("kind")
    if kind == "User":
        return bool(subject.get("name") == user.username)
    if kind == "Group":
        return subject.get("name") in user.groups
    if kind == "ServiceAccount":
        ns = subject.get("namespace") or binding_namespace
        return user.username == f"system:serviceaccount:{ns}:{subject.get('name')}"
    return False


DISCOVERY_PREFIXES = ("/api", "/apis", "/version", "/healthz", "/readyz", "/livez", "/openapi")


def authorize(user: UserInfo, attrs: RequestAttributes, lookup: Callable[[str, str | None], list[Obj]]) -> bool:
    """Whether RBAC allows ``attrs`` to ``user``. ``lookup(plural, namespace)`` lists stored RBAC objects."""
    if MASTERS in user.groups:
        return True
    if not attrs.resource:
        return (
            attrs.verb == "get"
            and "system:authenticated" in user.groups
            and any(attrs.path == p or attrs.path.startswith(p + "/") for p in DISCOVERY_PREFIXES)
        )

    def role_rules(ref: Obj, binding_ns: str | None) -> list[Obj]:
        plural = "clusterroles" if ref.get("kind") == "ClusterRole" else "roles"
        ns = None if plural == "clusterroles" else binding_ns
        for role in lookup(plural, ns):
            if role["metadata"]["name"] == ref.get("name"):
                return list(role.get("rules") or [])
        return []

    bindings: list[tuple[Obj, str | None]] = [(b, None) for b in lookup("clusterrolebindings", None)]
    if attrs.namespace:
        bindings += [(b, attrs.namespace) for b in lookup("rolebindings", attrs.namespace)]
    for binding, ns in bindings:
        if not any(subject_matches(s, user, ns) for s in binding.get("subjects") or []):
            continue
        if any(rule_allows(rule, attrs) for rule in role_rules(binding.get("roleRef") or {}, ns)):
            return True
    return False


@dataclasses.dataclass(frozen=True)
class TlsFiles:
    """A fresh CA and a server certificate for 127.0.0.1/localhost, as PEM files in a temp folder.

    In-cluster clients (``KUBERNETES_SERVICE_HOST`` + the mounted ``ca.crt``) speak only
    HTTPS, so the emulator serves it when a test wants the in-cluster path.
    """

    ca_file: str
    cert_file: str
    key_file: str

    @classmethod
    def create(cls, folder: str | None = None) -> TlsFiles:
        import datetime
        import ipaddress
        import os
        import tempfile

        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.x509.oid import NameOID

        folder = folder or tempfile.mkdtemp(prefix="respawn-apiserver-tls-")
        now = datetime.datetime.now(datetime.UTC)

        def cert(subject: str, key: Any, issuer: x509.Name | None, signer: Any, ca: bool) -> x509.Certificate:
            name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)])
            builder = (
                x509.CertificateBuilder()
                .subject_name(name)
                .issuer_name(issuer or name)
                .public_key(key.public_key())
                .serial_number(x509.random_serial_number())
                .not_valid_before(now - datetime.timedelta(minutes=5))
                .not_valid_after(now + datetime.timedelta(days=2))
                .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
            )
            if not ca:
                builder = builder.add_extension(
                    x509.SubjectAlternativeName(
                        [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
                    ),
                    critical=False,
                )
            return builder.sign(signer, hashes.SHA256())

        ca_key = ec.generate_private_key(ec.SECP256R1())
        ca_cert = cert("respawn-emulator-ca", ca_key, None, ca_key, True)
        key = ec.generate_private_key(ec.SECP256R1())
        server = cert("respawn-emulator", key, ca_cert.subject, ca_key, False)
        files = cls(os.path.join(folder, "ca.crt"), os.path.join(folder, "tls.crt"), os.path.join(folder, "tls.key"))
        with open(files.ca_file, "wb") as f:
            f.write(ca_cert.public_bytes(serialization.Encoding.PEM))
        with open(files.cert_file, "wb") as f:
            f.write(server.public_bytes(serialization.Encoding.PEM))
        with open(files.key_file, "wb") as f:
            f.write(
                key.private_bytes(
                    serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
                )
            )
        return files

    def server_context(self) -> Any:
        import ssl

        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.load_cert_chain(self.cert_file, self.key_file)
        return ctx

    def client_context(self) -> Any:
        import ssl

        return ssl.create_default_context(cafile=self.ca_file)
