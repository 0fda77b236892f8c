"""The operator's client reaches the real API server the ways a kubeconfig and the environment say: through a real
HTTP proxy (Debian's tinyproxy) named by proxy-url or HTTPS_PROXY (unless NO_PROXY names the server), and checking
the server's certificate against tls-server-name."""
from __future__ import annotations

import asyncio
import contextlib
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from rljob.controller import credentials
from rljob.controller.kube import Kube
from tests.cluster.controlplane import ControlPlane, find_bin_dir, wait_for
from tests.cluster.processes import free_port


class Proxy:
    """tinyproxy on 127.0.0.1, logging every connection it forwards."""

    def __init__(self, workdir: Path) -> None:
        self.port = free_port()
        self.log = workdir / "tinyproxy.log"
        self.log.touch()
        conf = workdir / "tinyproxy.conf"
        # No ConnectPort line: CONNECT to any port (the API server's is not 443).
        conf.write_text(f"Port {self.port}\nListen 127.0.0.1\nTimeout 60\nLogLevel Info\nLogFile \"{self.log}\"\n"
                        f"PidFile \"{workdir / 'tinyproxy.pid'}\"\nAllow 127.0.0.1\nMaxClients 20\n")
        binary = find_bin_dir(required=("tinyproxy",)) / "tinyproxy"
        self.process = subprocess.Popen([str(binary), "-d", "-c", str(conf)], stdout=subprocess.DEVNULL,
                                        stderr=subprocess.STDOUT)
        wait_for(lambda: "Accepting connections" in self.log.read_text() or self.process.poll() is not None,
                 timeout=20, interval=0.1, description="tinyproxy listening")
        assert self.process.poll() is None, self.log.read_text()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def tunnels_to(self, port: int) -> int:
        return self.log.read_text().count(f"CONNECT 127.0.0.1:{port}")

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=10)


@pytest.fixture
def proxy(tmp_path: Path) -> Iterator[Proxy]:
    proxy = Proxy(tmp_path)
    yield proxy
    proxy.stop()


def kubeconfig_with(control_plane: ControlPlane, path: Path, **cluster: Any) -> Path:
    config = yaml.safe_load(control_plane.kubeconfig.read_text())
    for entry in config["clusters"]:
        entry["cluster"].update(cluster)
    path.write_text(yaml.safe_dump(config))
    return path


def namespaces(path: Path, environ: dict[str, str] | None = None) -> list[str]:
    """The namespaces' names, read with the operator's own client (Kube) from this kubeconfig."""
    async def go() -> list[str]:
        with patched_environ(environ or {}):
            kube = Kube(credentials.load(str(path), environ={}))
        try:
            body = await kube.request("GET", "/api/v1/namespaces")
        finally:
            await kube.close()
        return [item["metadata"]["name"] for item in body["items"]]

    return asyncio.run(go())


@contextlib.contextmanager
def patched_environ(values: dict[str, str]) -> Iterator[None]:
    with pytest.MonkeyPatch.context() as mp:
        for name in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "NO_PROXY", "no_proxy"):
            mp.delenv(name, raising=False)
        for name, value in values.items():
            mp.setenv(name, value)
        yield


def api_port(control_plane: ControlPlane) -> int:
    return int(control_plane.server.rsplit(":", 1)[1])


def test_the_kubeconfigs_proxy_url_carries_every_request(control_plane: ControlPlane, proxy: Proxy,
                                                         tmp_path: Path) -> None:
    port = api_port(control_plane)
    assert proxy.tunnels_to(port) == 0
    through = kubeconfig_with(control_plane, tmp_path / "proxied", **{"proxy-url": proxy.url})
    assert "kube-system" in namespaces(through)
    assert proxy.tunnels_to(port) == 1
    # Proof that the proxy is on the way, not beside it: a proxy-url where nothing listens fails the request.
    nowhere = kubeconfig_with(control_plane, tmp_path / "nowhere", **{"proxy-url": f"http://127.0.0.1:{free_port()}"})
    with pytest.raises(Exception, match=r"(?i)cannot connect|connect call failed|refused"):
        namespaces(nowhere)


def test_https_proxy_from_the_environment_unless_no_proxy_names_the_server(control_plane: ControlPlane, proxy: Proxy,
                                                                          tmp_path: Path) -> None:
    port = api_port(control_plane)
    plain = kubeconfig_with(control_plane, tmp_path / "plain")
    assert "default" in namespaces(plain, {"HTTPS_PROXY": proxy.url})
    assert proxy.tunnels_to(port) == 1
    assert "default" in namespaces(plain, {"HTTPS_PROXY": proxy.url, "NO_PROXY": "example.com,127.0.0.1"})
    assert "default" in namespaces(plain, {"HTTP_PROXY": proxy.url})  # a plain-HTTP proxy setting: not for https
    assert proxy.tunnels_to(port) == 1


def test_tls_server_name_is_the_name_the_certificate_is_checked_against(control_plane: ControlPlane,
                                                                        tmp_path: Path) -> None:
    # The server is reached at 127.0.0.1; its certificate also names the in-cluster Service.
    named = kubeconfig_with(control_plane, tmp_path / "named", **{"tls-server-name": "kubernetes.default.svc"})
    assert "default" in namespaces(named)
    wrong = kubeconfig_with(control_plane, tmp_path / "wrong", **{"tls-server-name": "wrong.example"})
    with pytest.raises(Exception, match=r"(?i)hostname mismatch|certificate verify failed|doesn't match"):
        namespaces(wrong)


def test_a_proxy_the_client_cannot_speak_is_refused_by_name(control_plane: ControlPlane, tmp_path: Path) -> None:
    socks = kubeconfig_with(control_plane, tmp_path / "socks", **{"proxy-url": "socks5://127.0.0.1:1080"})
    with pytest.raises(credentials.CredentialsError, match=re.escape(
            "proxy-url 'socks5://127.0.0.1:1080': the operator speaks to http:// and https:// proxies only")):
        credentials.load(str(socks), environ={})
