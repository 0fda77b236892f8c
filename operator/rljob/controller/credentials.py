"""Who the operator is to the API server: its service account in a pod, else the kubeconfig's current context.

Read here rather than by the official client's loaders, so that the operator process never imports the
`kubernetes` package (kopf imports it, with its ~600 generated model classes, whenever it can: about 9 MB
of the operator's memory and 275 modules to import). The same credentials serve the operator's own
calls (controller.kube) and kopf's watches (its login handler).

What a kubeconfig may hold and this reads: client certificates and keys (files or data), bearer tokens
(inline or a tokenFile), basic auth, a CA (file or data) or insecure-skip-tls-verify, tls-server-name,
proxy-url (an http:// or https:// proxy), and exec plugins (client.authentication.k8s.io ExecCredential:
a token, renewed when it expires, or a client certificate). The legacy auth-provider plugins (gcp, azure,
oidc) are refused by name: their clouds replaced them with exec plugins.

Without a proxy-url, the proxy comes from the environment as for client-go: HTTPS_PROXY (HTTP_PROXY for a
plain-HTTP server) unless NO_PROXY names the server's host, in a pod as outside one.
"""
from __future__ import annotations

import base64
import json
import os
import ssl
import subprocess
import tempfile
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import yaml

SERVICE_ACCOUNT_DIR = Path("/var/run/secrets/kubernetes.io/serviceaccount")
# Bound service account tokens are rotated by the kubelet (hourly by default); re-read well within that.
TOKEN_FILE_REREAD_SECONDS = 60.0
# An exec plugin's token is renewed this long before it expires, so no call goes out with a stale one.
EXPIRY_MARGIN_SECONDS = 60.0
EXEC_TIMEOUT_SECONDS = 60.0


class CredentialsError(Exception):
    """No usable credentials: the message says which file, context or field, for one line of output."""


@dataclass(frozen=True)
class ExecPlugin:
    command: str
    args: tuple[str, ...] = ()
    env: tuple[tuple[str, str], ...] = ()
    api_version: str = "client.authentication.k8s.io/v1"
    cwd: str | None = None  # a relative command is found relative to the kubeconfig that names it


@dataclass(frozen=True)
class ExecResult:
    token: str | None
    certificate: bytes | None
    key: bytes | None
    expires: float | None  # epoch seconds; None: valid until the server refuses it


@dataclass
class Credentials:
    server: str
    ca_file: str | None = None
    ca_data: bytes | None = None  # PEM
    insecure: bool = False
    cert_file: str | None = None
    key_file: str | None = None
    cert_data: bytes | None = None  # PEM
    key_data: bytes | None = None
    token: str | None = None
    token_file: str | None = None
    username: str | None = None
    password: str | None = None
    exec_plugin: ExecPlugin | None = None
    namespace: str | None = None
    proxy_url: str | None = None  # the kubeconfig's; else the environment's (proxy())
    tls_server_name: str | None = None  # the name the server's certificate is checked against, if not the URL's host
    source: str = ""  # where they came from, for messages
    clock: Callable[[], float] = field(default=time.time, repr=False)
    run_exec: Callable[[ExecPlugin], ExecResult] | None = field(default=None, repr=False)
    _token_read_at: float = field(default=-1e18, repr=False)
    _exec: ExecResult | None = field(default=None, repr=False)

    # ── the bearer token, renewed as its source demands ─────────────────────────────────────────────

    def bearer_token(self) -> str | None:
        """The token to send now: cheap on every call (cached), renewed when its file or plugin says so."""
        if self.exec_plugin is not None:
            result = self._exec_result()
            if result.token:
                return result.token
        if self.token_file:
            now = self.clock()
            if now - self._token_read_at >= TOKEN_FILE_REREAD_SECONDS:
                try:
                    self.token = Path(self.token_file).read_text().strip()
                except OSError as exc:
                    if self.token is None:
                        raise CredentialsError(f"cannot read the token file {self.token_file}: {exc.strerror}") from None
                self._token_read_at = now  # a failed re-read keeps the last token until the next try
        return self.token

    def authorization(self) -> str | None:
        """The Authorization header's value."""
        token = self.bearer_token()
        if token:
            return f"Bearer {token}"
        if self.username is not None and self.password is not None:
            return "Basic " + base64.b64encode(f"{self.username}:{self.password}".encode()).decode()
        return None

    def expires(self) -> datetime | None:
        """When the current token stops working (exec plugins only), for kopf to log in again before then."""
        if self.exec_plugin is None or self._exec is None or self._exec.expires is None:
            return None
        return datetime.fromtimestamp(self._exec.expires, tz=timezone.utc)

    def _exec_result(self) -> ExecResult:
        assert self.exec_plugin is not None
        cached = self._exec
        if cached is None or (cached.expires is not None and cached.expires - EXPIRY_MARGIN_SECONDS <= self.clock()):
            self._exec = (self.run_exec or run_exec_plugin)(self.exec_plugin)
        return self._exec

    # ── the way there ───────────────────────────────────────────────────────────────────────────────

    def proxy(self, environ: Mapping[str, str] | None = None) -> str | None:
        """The proxy to send every request through, or None: the kubeconfig's proxy-url, else the environment's."""
        if self.proxy_url:
            return self.proxy_url
        env = os.environ if environ is None else environ
        scheme = "https" if self.server.startswith("https") else "http"
        proxies = {k.lower().removesuffix("_proxy"): v for k, v in env.items()
                   if k.lower() in ("http_proxy", "https_proxy", "no_proxy") and v}
        chosen = proxies.get(scheme)
        if not chosen:
            return None
        host = urllib.parse.urlsplit(self.server).hostname or ""
        if proxies.get("no") and urllib.request.proxy_bypass_environment(host, {"no": proxies["no"]}):
            return None
        return chosen

    # ── TLS ─────────────────────────────────────────────────────────────────────────────────────────

    def client_certificate(self) -> tuple[bytes, bytes] | None:
        """(certificate PEM, key PEM): the kubeconfig's, or what the exec plugin returned."""
        if self.exec_plugin is not None:
            result = self._exec_result()
            if result.certificate and result.key:
                return result.certificate, result.key
        cert = self.cert_data if self.cert_data is not None else _read(self.cert_file, "client certificate")
        key = self.key_data if self.key_data is not None else _read(self.key_file, "client key")
        if cert is None and key is None:
            return None
        if cert is None or key is None:
            raise CredentialsError(f"{self.source}: a client certificate needs both the certificate and its key")
        return cert, key

    def ssl_context(self) -> ssl.SSLContext | bool:
        """For aiohttp: True (plain HTTP, nothing to verify), False (insecure) or a context."""
        if not self.server.startswith("https"):
            return True
        if self.insecure:
            context = ssl.create_default_context()
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        elif self.ca_data is not None:
            context = ssl.create_default_context(cadata=self.ca_data.decode())
        else:
            context = ssl.create_default_context(cafile=self.ca_file)
        pair = self.client_certificate()
        if pair is not None:
            load_cert_chain(context, *pair)
        return context


def load_cert_chain(context: ssl.SSLContext, cert: bytes, key: bytes) -> None:
    """ssl reads a certificate chain from files only: a private temporary file, removed at once."""
    with tempfile.TemporaryDirectory(prefix="rljob-tls-") as tmp:  # mode 0700
        cert_path, key_path = Path(tmp, "tls.crt"), Path(tmp, "tls.key")
        cert_path.write_bytes(cert)
        key_path.touch(mode=0o600)
        key_path.write_bytes(key)
        context.load_cert_chain(str(cert_path), str(key_path))


def _read(path: str | None, what: str) -> bytes | None:
    if not path:
        return None
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise CredentialsError(f"cannot read the {what} {path}: {exc.strerror}") from None


# ── exec plugins ────────────────────────────────────────────────────────────────────────────────────


def run_exec_plugin(plugin: ExecPlugin) -> ExecResult:
    """Runs a client-go credential plugin and reads its ExecCredential from stdout."""
    info = {"apiVersion": plugin.api_version, "kind": "ExecCredential", "spec": {"interactive": False}}
    env = {**os.environ, **dict(plugin.env), "KUBERNETES_EXEC_INFO": json.dumps(info)}
    try:
        done = subprocess.run(
            [plugin.command, *plugin.args], env=env, cwd=plugin.cwd, capture_output=True, text=True,
            timeout=EXEC_TIMEOUT_SECONDS, stdin=subprocess.DEVNULL, check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise CredentialsError(f"the kubeconfig's exec plugin {plugin.command!r} did not run: {exc}") from None
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or [""])[-1]
        raise CredentialsError(f"the kubeconfig's exec plugin {plugin.command!r} exited with {done.returncode}: {last}")
    return parse_exec_credential(done.stdout, plugin.command)


def parse_exec_credential(text: str, command: str = "exec plugin") -> ExecResult:
    try:
        status = (json.loads(text) or {}).get("status") or {}
    except (ValueError, AttributeError):
        raise CredentialsError(f"{command!r} did not print an ExecCredential (JSON)") from None
    token = status.get("token") or None
    cert, key = status.get("clientCertificateData"), status.get("clientKeyData")
    if not token and not (cert and key):
        raise CredentialsError(f"{command!r} returned neither a token nor a client certificate and key")
    expires = None
    if status.get("expirationTimestamp"):
        try:
            expires = datetime.fromisoformat(status["expirationTimestamp"].replace("Z", "+00:00")).timestamp()
        except ValueError:
            raise CredentialsError(f"{command!r}: expirationTimestamp {status['expirationTimestamp']!r} is not RFC 3339") from None
    return ExecResult(token, cert.encode() if cert else None, key.encode() if key else None, expires)


# ── where they come from ────────────────────────────────────────────────────────────────────────────


def load(kubeconfig: str | None = None, *, environ: Mapping[str, str] | None = None,
         service_account_dir: Path = SERVICE_ACCOUNT_DIR) -> Credentials:
    """In a pod, its service account; else the kubeconfig ($KUBECONFIG, or ~/.kube/config).

    An explicit `kubeconfig` (the --kubeconfig flag) wins over the pod's service account.
    """
    env = os.environ if environ is None else environ
    if kubeconfig is None and env.get("KUBERNETES_SERVICE_HOST") and (service_account_dir / "token").is_file():
        return in_cluster(env, service_account_dir)
    paths = [kubeconfig] if kubeconfig else [p for p in (env.get("KUBECONFIG") or "").split(os.pathsep) if p]
    if not paths:
        paths = [str(Path(env.get("HOME") or Path.home()) / ".kube" / "config")]
    return from_kubeconfig(paths, why_none="" if kubeconfig else "not in a pod, and ")


def in_cluster(env: Mapping[str, str], directory: Path = SERVICE_ACCOUNT_DIR) -> Credentials:
    host, port = env["KUBERNETES_SERVICE_HOST"], env.get("KUBERNETES_SERVICE_PORT", "443")
    if ":" in host:  # IPv6
        host = f"[{host}]"
    namespace = directory / "namespace"
    creds = Credentials(
        server=f"https://{host}:{port}",
        ca_file=str(directory / "ca.crt"),
        token_file=str(directory / "token"),
        namespace=namespace.read_text().strip() if namespace.is_file() else None,
        source=f"the service account in {directory}",
    )
    creds.bearer_token()  # fails now, with the file's name, rather than on the first call
    return creds


def _merged(paths: Sequence[str], why_none: str) -> tuple[dict[str, Any], dict[str, str]]:
    """client-go's merge: for each named cluster, user and context the first file that defines it wins."""
    merged: dict[str, Any] = {"current-context": None, "clusters": {}, "users": {}, "contexts": {}}
    origin: dict[str, str] = {}  # "clusters/name" → the file that defined it (relative paths are relative to it)
    found = False
    for path in paths:
        try:
            text = Path(path).read_text()
        except FileNotFoundError:
            continue
        except OSError as exc:
            raise CredentialsError(f"cannot read the kubeconfig {path}: {exc.strerror}") from None
        found = True
        try:
            data = yaml.safe_load(text) or {}
        except yaml.YAMLError as exc:
            raise CredentialsError(f"the kubeconfig {path} is not valid YAML: {exc}") from None
        if not isinstance(data, dict):
            raise CredentialsError(f"the kubeconfig {path} is not a kubeconfig (a mapping)")
        merged["current-context"] = merged["current-context"] or data.get("current-context")
        for section, key in (("clusters", "cluster"), ("users", "user"), ("contexts", "context")):
            for entry in data.get(section) or []:
                name = (entry or {}).get("name")
                if name is not None and name not in merged[section]:
                    merged[section][name] = entry.get(key) or {}
                    origin[f"{section}/{name}"] = path
    if not found:
        raise CredentialsError(f"no Kubernetes credentials: {why_none}no kubeconfig at {os.pathsep.join(paths)}")
    return merged, origin


def from_kubeconfig(paths: Sequence[str], context: str | None = None, why_none: str = "") -> Credentials:
    config, origin = _merged(paths, why_none)
    where = os.pathsep.join(paths)
    name = context or config["current-context"]
    if not name:
        raise CredentialsError(f"the kubeconfig {where} sets no current-context")
    ctx = config["contexts"].get(name)
    if ctx is None:
        raise CredentialsError(f"the kubeconfig {where} has no context {name!r}")
    cluster_name, user_name = ctx.get("cluster"), ctx.get("user")
    cluster = config["clusters"].get(cluster_name)
    if cluster is None or not cluster.get("server"):
        raise CredentialsError(f"the kubeconfig {where}: context {name!r} names cluster {cluster_name!r}, which has no server")
    user = (config["users"].get(user_name) or {}) if user_name else {}
    cluster_dir = Path(origin.get(f"clusters/{cluster_name}", paths[0])).parent
    user_dir = Path(origin.get(f"users/{user_name}", paths[0])).parent
    source = f"the kubeconfig {where}, context {name!r}"
    if user.get("auth-provider"):
        provider = (user["auth-provider"] or {}).get("name", "?")
        raise CredentialsError(f"{source}: user {user_name!r} uses the auth-provider {provider!r}, which the operator does "
                               "not read; use its exec plugin (e.g. gke-gcloud-auth-plugin, kubelogin) or a token")
    plugin = None
    if user.get("exec"):
        spec = user["exec"]
        if not spec.get("command"):
            raise CredentialsError(f"{source}: user {user_name!r}: exec without a command")
        plugin = ExecPlugin(
            command=spec["command"],
            args=tuple(str(a) for a in spec.get("args") or ()),
            env=tuple((str(e["name"]), str(e.get("value", ""))) for e in spec.get("env") or ()),
            api_version=spec.get("apiVersion") or ExecPlugin.api_version,
            cwd=str(user_dir) if "/" in spec["command"] and not Path(spec["command"]).is_absolute() else None,
        )
    return Credentials(
        server=str(cluster["server"]).rstrip("/"),
        ca_file=_path(cluster.get("certificate-authority"), cluster_dir),
        ca_data=_data(cluster.get("certificate-authority-data"), source, "certificate-authority-data"),
        insecure=bool(cluster.get("insecure-skip-tls-verify")),
        cert_file=_path(user.get("client-certificate"), user_dir),
        key_file=_path(user.get("client-key"), user_dir),
        cert_data=_data(user.get("client-certificate-data"), source, "client-certificate-data"),
        key_data=_data(user.get("client-key-data"), source, "client-key-data"),
        token=user.get("token") or None,
        token_file=_path(user.get("tokenFile"), user_dir),
        username=user.get("username"),
        password=user.get("password"),
        exec_plugin=plugin,
        namespace=ctx.get("namespace"),
        proxy_url=_proxy_url(cluster.get("proxy-url"), source),
        tls_server_name=str(cluster["tls-server-name"]) if cluster.get("tls-server-name") else None,
        source=source,
    )


PROXY_SCHEMES = ("http", "https")


def _proxy_url(value: Any, source: str) -> str | None:
    """The kubeconfig's proxy-url, if it is one the operator can use (client-go also takes socks5, which it cannot)."""
    if not value:
        return None
    url = str(value)
    scheme = urllib.parse.urlsplit(url).scheme
    if scheme not in PROXY_SCHEMES:
        raise CredentialsError(f"{source}: proxy-url {url!r}: the operator speaks to http:// and https:// proxies only "
                               f"(not {scheme or 'a URL without a scheme'})")
    return url


def _path(value: Any, base: Path) -> str | None:
    if not value:
        return None
    path = Path(os.path.expanduser(str(value)))
    return str(path if path.is_absolute() else base / path)


def _data(value: Any, source: str, what: str) -> bytes | None:
    if not value:
        return None
    try:
        return base64.b64decode(str(value), validate=True)
    except ValueError:
        raise CredentialsError(f"{source}: {what} is not base64") from None
