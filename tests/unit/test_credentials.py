"""The operator's credentials, read without the official client: kubeconfigs, service accounts, exec plugins.

The TLS tests talk to a real HTTPS server that demands a client certificate, with certificates made by
the test cluster's PKI (openssl).
"""
from __future__ import annotations

import asyncio
import base64
import json
import os
import ssl
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from aiohttp import web

from rljob.controller import credentials
from rljob.controller.credentials import Credentials, CredentialsError, ExecPlugin, ExecResult
from rljob.controller.kube import ApiException, Kube
from tests.cluster.pki import PKI

ROOT = Path(__file__).resolve().parents[2]


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def kubeconfig(path: Path, *, cluster: dict[str, Any], user: dict[str, Any], namespace: str | None = None,
               current: str | None = "ctx") -> Path:
    context: dict[str, Any] = {"cluster": "c", "user": "u"}
    if namespace:
        context["namespace"] = namespace
    data = {
        "apiVersion": "v1", "kind": "Config",
        "clusters": [{"name": "c", "cluster": cluster}],
        "users": [{"name": "u", "user": user}],
        "contexts": [{"name": "ctx", "context": context}],
    }
    if current:
        data["current-context"] = current
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> PKI:
    p = PKI(tmp_path_factory.mktemp("pki"))
    p.make_ca()
    p.make_cert("server", "localhost", server=True, ips=["127.0.0.1"])
    p.make_cert("alice", "alice", client=True)
    return p


class Server:
    """HTTPS on 127.0.0.1 that requires a client certificate signed by the test CA; records what it was sent."""

    def __init__(self, pki: PKI) -> None:
        self.pki = pki
        self.seen: list[dict[str, Any]] = []

    async def handle(self, request: web.Request) -> web.Response:
        peer = request.transport.get_extra_info("peercert") if request.transport else None
        subject = dict(x[0] for x in (peer or {}).get("subject", ()))
        self.seen.append({"authorization": request.headers.get("Authorization"), "cn": subject.get("commonName")})
        if request.path == "/forbidden":
            return web.json_response({"kind": "Status", "message": "pods is forbidden: no"}, status=403)
        return web.json_response({"kind": "Namespace", "metadata": {"name": "default"}})

    async def __aenter__(self) -> str:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=str(self.pki.ca_crt))
        context.verify_mode = ssl.CERT_REQUIRED
        context.load_cert_chain(str(self.pki.dir / "server.crt"), str(self.pki.dir / "server.key"))
        app = web.Application()
        app.router.add_get("/{tail:.*}", self.handle)
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0, ssl_context=context)
        await site.start()
        port = self.runner.addresses[0][1]
        return f"https://127.0.0.1:{port}"

    async def __aexit__(self, *exc: object) -> None:
        await self.runner.cleanup()


def test_client_certificate_from_kubeconfig_data_talks_mutual_tls(pki: PKI, tmp_path: Path) -> None:
    async def go() -> None:
        server = Server(pki)
        async with server as url:
            ca = b64(pki.ca_crt.read_bytes())
            path = kubeconfig(tmp_path / "config", cluster={"server": url + "/", "certificate-authority-data": ca},
                              user={"client-certificate-data": b64((pki.dir / "alice.crt").read_bytes()),
                                    "client-key-data": b64((pki.dir / "alice.key").read_bytes())}, namespace="team-a")
            creds = credentials.load(str(path), environ={})
            assert creds.server == url and creds.namespace == "team-a"
            kube = Kube(creds)
            try:
                assert (await kube.request("GET", "/api/v1/namespaces/default"))["metadata"]["name"] == "default"
                with pytest.raises(ApiException) as refused:
                    await kube.request("GET", "/forbidden")
            finally:
                await kube.close()
        assert server.seen[0] == {"authorization": None, "cn": "alice"}
        assert refused.value.status == 403 and "pods is forbidden: no" in str(refused.value)

    asyncio.run(go())


def test_relative_files_are_relative_to_the_kubeconfig_and_a_token_goes_along(pki: PKI, tmp_path: Path) -> None:
    home = tmp_path / "kube"
    home.mkdir()
    for name in ("ca.crt", "alice.crt", "alice.key"):
        (home / name).write_bytes((pki.dir / name).read_bytes())

    async def go() -> None:
        server = Server(pki)
        async with server as url:
            path = kubeconfig(home / "config", cluster={"server": url, "certificate-authority": "ca.crt"},
                              user={"client-certificate": "alice.crt", "client-key": "alice.key", "token": "t0k"})
            creds = credentials.load(str(path), environ={})
            assert creds.ca_file == str(home / "ca.crt")
            kube = Kube(creds)
            try:
                await kube.request("GET", "/api")
            finally:
                await kube.close()
        assert server.seen == [{"authorization": "Bearer t0k", "cn": "alice"}]

    asyncio.run(go())


def test_an_unknown_ca_is_refused(pki: PKI, tmp_path: Path) -> None:
    other = PKI(tmp_path / "other")
    other.make_ca("someone-else")

    async def go() -> None:
        async with Server(pki) as url:
            creds = Credentials(server=url, ca_file=str(other.ca_crt), cert_file=str(pki.dir / "alice.crt"),
                                key_file=str(pki.dir / "alice.key"))
            kube = Kube(creds)
            try:
                with pytest.raises(Exception, match=r"CERTIFICATE_VERIFY_FAILED|certificate verify failed"):
                    await kube.request("GET", "/api")
            finally:
                await kube.close()

    asyncio.run(go())


def test_kubeconfig_list_merges_first_wins(tmp_path: Path) -> None:
    first = tmp_path / "a"
    first.write_text(yaml.safe_dump({"current-context": "x", "contexts": [{"name": "x", "context": {"cluster": "c", "user": "u"}}],
                                     "users": [{"name": "u", "user": {"token": "from-a"}}]}))
    second = kubeconfig(tmp_path / "b", cluster={"server": "http://127.0.0.1:1"}, user={"token": "from-b"}, current="ctx")
    creds = credentials.load(environ={"KUBECONFIG": f"{first}{os.pathsep}{tmp_path / 'missing'}{os.pathsep}{second}"})
    assert (creds.server, creds.bearer_token()) == ("http://127.0.0.1:1", "from-a")
    assert creds.ssl_context() is True  # plain HTTP: nothing to verify


@pytest.mark.parametrize(("config", "message"), [
    ({"cluster": {"server": "https://x"}, "user": {"auth-provider": {"name": "gcp"}}},
     "auth-provider 'gcp', which the operator does not read"),
    ({"cluster": {"server": "https://x"}, "user": {}, "current": None}, "sets no current-context"),
    ({"cluster": {"server": "https://x"}, "user": {}, "current": "other"}, "has no context 'other'"),
    ({"cluster": {}, "user": {}}, "names cluster 'c', which has no server"),
    ({"cluster": {"server": "https://x", "certificate-authority-data": "not base64!"}, "user": {}},
     "certificate-authority-data is not base64"),
])
def test_bad_kubeconfigs_name_what_is_wrong(tmp_path: Path, config: dict[str, Any], message: str) -> None:
    path = kubeconfig(tmp_path / "config", **config)
    with pytest.raises(CredentialsError, match=message):
        credentials.load(str(path), environ={})


def test_no_credentials_at_all(tmp_path: Path) -> None:
    with pytest.raises(CredentialsError, match=r"not in a pod, and no kubeconfig at .*/\.kube/config"):
        credentials.load(environ={"HOME": str(tmp_path)})
    (tmp_path / "bad").write_text("- a\n- list\n")
    with pytest.raises(CredentialsError, match="is not a kubeconfig"):
        credentials.load(str(tmp_path / "bad"), environ={})


def test_in_a_pod_the_service_account_and_its_rotated_token(tmp_path: Path) -> None:
    sa = tmp_path / "sa"
    sa.mkdir()
    (sa / "token").write_text("first\n")
    (sa / "ca.crt").write_text("")
    (sa / "namespace").write_text("rljob-system")
    now = [time.time()]  # the first read, when loaded, is at the real time
    env = {"KUBERNETES_SERVICE_HOST": "fd00::1", "KUBERNETES_SERVICE_PORT": "6443"}
    creds = credentials.load(environ=env, service_account_dir=sa)
    creds.clock = lambda: now[0]
    assert (creds.server, creds.namespace, creds.ca_file) == ("https://[fd00::1]:6443", "rljob-system", str(sa / "ca.crt"))
    assert creds.authorization() == "Bearer first"
    (sa / "token").write_text("second")
    now[0] += 30
    assert creds.bearer_token() == "first"  # read again at most once a minute, not on every call
    now[0] += 3600
    assert creds.bearer_token() == "second"
    (sa / "token").unlink()
    now[0] += 3600
    assert creds.bearer_token() == "second"  # a failed re-read keeps the last token
    # --kubeconfig wins over the pod's own account
    path = kubeconfig(tmp_path / "config", cluster={"server": "http://127.0.0.1:1"}, user={"token": "mine"})
    assert credentials.load(str(path), environ=env, service_account_dir=sa).bearer_token() == "mine"


def plugin_script(tmp_path: Path, body: str) -> Path:
    script = tmp_path / "plugin.py"
    script.write_text(f"#!{sys.executable}\n" + textwrap.dedent(body))
    script.chmod(0o755)
    return script


def test_exec_plugin_token_renewed_when_it_expires(tmp_path: Path) -> None:
    calls = tmp_path / "calls"
    plugin_script(tmp_path, f"""
        import json, os, pathlib
        calls = pathlib.Path({str(calls)!r})
        n = len(calls.read_text()) if calls.exists() else 0
        calls.write_text("x" * (n + 1))
        info = json.loads(os.environ["KUBERNETES_EXEC_INFO"])
        assert info["spec"]["interactive"] is False and os.environ["REGION"] == "eu"
        print(json.dumps({{"apiVersion": info["apiVersion"], "kind": "ExecCredential",
                          "status": {{"token": f"tok-{{n}}-{{os.sys.argv[1]}}", "expirationTimestamp": "2030-01-01T00:00:00Z"}}}}))
    """)
    path = kubeconfig(tmp_path / "config", cluster={"server": "https://x"},
                      user={"exec": {"apiVersion": "client.authentication.k8s.io/v1beta1", "command": "./plugin.py",
                                     "args": ["a"], "env": [{"name": "REGION", "value": "eu"}]}})
    creds = credentials.load(str(path), environ={})
    assert creds.exec_plugin is not None and creds.exec_plugin.cwd == str(tmp_path)
    expiry = 1893456000.0  # 2030-01-01
    now = [expiry - 3600]
    creds.clock = lambda: now[0]
    assert creds.authorization() == "Bearer tok-0-a"
    assert creds.bearer_token() == "tok-0-a" and calls.read_text() == "x"  # cached while valid
    assert creds.expires() is not None and creds.expires().timestamp() == expiry
    now[0] = expiry - 30  # within the margin: renewed before it lapses
    assert creds.bearer_token() == "tok-1-a"


def test_exec_plugin_failures_are_one_line(tmp_path: Path) -> None:
    failing = plugin_script(tmp_path, """
        import sys
        print("refreshing...", file=sys.stderr)
        print("error: you must be logged in (run gcloud auth login)", file=sys.stderr)
        sys.exit(3)
    """)
    creds = Credentials(server="https://x", exec_plugin=ExecPlugin(command=str(failing)))
    with pytest.raises(CredentialsError, match=r"exited with 3: error: you must be logged in \(run gcloud auth login\)$"):
        creds.bearer_token()
    with pytest.raises(CredentialsError, match="did not run"):
        Credentials(server="https://x", exec_plugin=ExecPlugin(command=str(tmp_path / "nope"))).bearer_token()
    for text, message in (("not json", "did not print an ExecCredential"),
                          (json.dumps({"status": {}}), "neither a token nor a client certificate"),
                          (json.dumps({"status": {"token": "t", "expirationTimestamp": "soon"}}), "not RFC 3339")):
        with pytest.raises(CredentialsError, match=message):
            credentials.parse_exec_credential(text, "p")


def test_exec_plugin_client_certificate_is_used_for_tls(pki: PKI) -> None:
    cert, key = (pki.dir / "alice.crt").read_bytes(), (pki.dir / "alice.key").read_bytes()

    async def go() -> None:
        server = Server(pki)
        async with server as url:
            creds = Credentials(server=url, ca_file=str(pki.ca_crt), exec_plugin=ExecPlugin(command="unused"),
                                run_exec=lambda plugin: ExecResult(None, cert, key, None))
            kube = Kube(creds)
            try:
                await kube.request("GET", "/api")
            finally:
                await kube.close()
        assert server.seen == [{"authorization": None, "cn": "alice"}]

    asyncio.run(go())


def test_kopf_logs_in_with_the_same_credentials() -> None:
    from rljob.controller.handlers import connection_info

    info = connection_info(Credentials(server="https://x", ca_data=b"-----BEGIN CERTIFICATE-----", token="t", namespace="ns"))
    assert (info.server, info.scheme, info.token, info.ca_data, info.ca_path, info.default_namespace) == (
        "https://x", "Bearer", "t", b"-----BEGIN CERTIFICATE-----", None, "ns")
    basic = connection_info(Credentials(server="https://x", ca_file="/ca", username="u", password="p", insecure=True))
    assert (basic.username, basic.password, basic.token, basic.ca_path, basic.insecure) == ("u", "p", None, "/ca", True)
    assert Credentials(server="h", username="u", password="p").authorization() == "Basic " + b64(b"u:p")


def test_the_operator_process_runs_without_the_official_client() -> None:
    """Everything `rljob operator` loads works with `kubernetes` unimportable (as the operator makes it)."""
    code = textwrap.dedent("""
        import sys
        sys.modules["kubernetes"] = None
        import kopf
        from kopf._cogs.helpers import thirdparty
        assert thirdparty.V1ObjectMetaSync is None
        from rljob.controller import handlers, reconciler, leader, kueue, apply, metrics, credentials
        print("ok", len([m for m in sys.modules if m.startswith("kubernetes.")]))
    """)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT,
                          env={**os.environ, "PYTHONPATH": str(ROOT / "operator")}, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["ok", "0"]


def test_rljob_operator_without_credentials_says_so(tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, "-c", "import sys; from rljob.cli import main; sys.exit(main())", "operator",
                           "--kubeconfig", str(tmp_path / "none")],
                          capture_output=True, text=True, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT / "operator")},
                          check=False, timeout=60)
    assert done.returncode == 1
    assert done.stderr.strip().splitlines()[-1] == f"rljob operator: no Kubernetes credentials: no kubeconfig at {tmp_path / 'none'}"


def test_the_proxy_comes_from_the_kubeconfig_else_from_the_environment_as_for_client_go() -> None:
    https = Credentials(server="https://api.example.com:6443")
    assert https.proxy({}) is None
    assert https.proxy({"HTTPS_PROXY": "http://proxy:3128"}) == "http://proxy:3128"
    assert https.proxy({"https_proxy": "http://lower:3128"}) == "http://lower:3128"
    assert https.proxy({"HTTP_PROXY": "http://proxy:3128"}) is None  # for plain-HTTP servers only
    assert https.proxy({"HTTPS_PROXY": "http://proxy:3128", "NO_PROXY": "example.com"}) is None  # a domain suffix
    assert https.proxy({"HTTPS_PROXY": "http://proxy:3128", "NO_PROXY": "other.org,api.example.com"}) is None
    assert https.proxy({"HTTPS_PROXY": "http://proxy:3128", "NO_PROXY": "other.org"}) == "http://proxy:3128"
    assert Credentials(server="http://127.0.0.1:8080").proxy({"HTTP_PROXY": "http://p:1"}) == "http://p:1"
    named = Credentials(server="https://api.example.com", proxy_url="https://corp-proxy:8443")
    assert named.proxy({"HTTPS_PROXY": "http://other:3128", "NO_PROXY": "*"}) == "https://corp-proxy:8443"


def test_proxy_url_and_tls_server_name_are_read_from_the_kubeconfig(tmp_path: Path) -> None:
    path = kubeconfig(tmp_path / "config", cluster={"server": "https://10.0.0.1:6443", "proxy-url": "http://proxy:3128",
                                                    "tls-server-name": "api.internal"}, user={"token": "t"})
    creds = credentials.load(str(path), environ={})
    assert (creds.proxy_url, creds.tls_server_name) == ("http://proxy:3128", "api.internal")
    bad = kubeconfig(tmp_path / "bad", cluster={"server": "https://10.0.0.1:6443", "proxy-url": "proxy:3128"}, user={})
    with pytest.raises(CredentialsError, match="proxy-url 'proxy:3128': the operator speaks to http:// and https:// "
                                               "proxies only"):
        credentials.load(str(bad), environ={})
