"""The test cluster's certificates, made with the openssl command, and the kubeconfigs that carry them."""

from __future__ import annotations

import base64
import secrets
import shutil
import subprocess
from collections.abc import Sequence
from pathlib import Path

import yaml

from .errors import ControlPlaneError

__all__ = ["PKI", "write_kubeconfig"]


class PKI:
    """A throw-away CA and the certificates of the cluster, made with the openssl command (EC P-256 keys).

    Files go to ``directory``: ``ca.crt``/``ca.key`` (after :meth:`make_ca`), then ``NAME.key``, ``NAME.crt``
    and their openssl config for each :meth:`make_cert`. A PKI made on the directory of an existing one signs
    with that CA (the e2e cluster adds its kubelet's certificates so)."""

    def __init__(self, directory: Path, openssl: str = "openssl") -> None:
        self.dir = directory
        self.openssl = shutil.which(openssl) or openssl
        self.dir.mkdir(parents=True, exist_ok=True)
        self.ca_crt = self.dir / "ca.crt"
        self.ca_key = self.dir / "ca.key"

    def _run(self, *args: str | Path) -> None:
        try:
            subprocess.run([self.openssl, *map(str, args)], check=True, capture_output=True, text=True, cwd=self.dir)
        except FileNotFoundError as e:
            raise ControlPlaneError("the `openssl` command is needed to make the cluster's certificates") from e
        except subprocess.CalledProcessError as e:
            raise ControlPlaneError(f"openssl {' '.join(map(str, args))} failed: {e.stderr.strip()}") from e

    def key(self, name: str) -> Path:
        """A new private key, ``NAME.key`` (mode 0600)."""
        path = self.dir / f"{name}.key"
        self._run("genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", path)
        path.chmod(0o600)
        return path

    def public_key(self, key: Path, name: str) -> Path:
        """The public half of ``key``, as ``NAME.pub``."""
        path = self.dir / f"{name}.pub"
        self._run("pkey", "-in", key, "-pubout", "-out", path)
        return path

    def _config(self, name: str, cn: str, orgs: Sequence[str], extensions: Sequence[str]) -> Path:
        dn = [f"CN = {cn}"] + [f"{i}.O = {o}" for i, o in enumerate(orgs)]
        text = "\n".join(["[req]", "distinguished_name = dn", "prompt = no", "[dn]", *dn, "[ext]", *extensions, ""])
        path = self.dir / f"{name}.cnf"
        path.write_text(text)
        return path

    def make_ca(self, cn: str = "rljob-test-ca") -> None:
        """A self-signed CA (ten years), ``ca.crt``/``ca.key``."""
        self.key("ca")
        cnf = self._config(
            "ca",
            cn,
            (),
            [
                "basicConstraints = critical, CA:TRUE",
                "keyUsage = critical, keyCertSign, cRLSign, digitalSignature",
                "subjectKeyIdentifier = hash",
            ],
        )
        self._run(
            "req", "-x509", "-new", "-key", self.ca_key, "-config", cnf, "-extensions", "ext",
            "-days", "3650", "-sha256", "-out", self.ca_crt,
        )  # fmt: skip

    def make_cert(
        self,
        name: str,
        cn: str,
        orgs: Sequence[str] = (),
        *,
        server: bool = False,
        client: bool = False,
        dns: Sequence[str] = (),
        ips: Sequence[str] = (),
    ) -> tuple[Path, Path]:
        """A certificate signed by the CA for subject ``cn`` (Kubernetes' user name) and ``orgs`` (its groups),
        for server and/or client authentication, with ``dns``/``ips`` as subject alternative names; returns
        (certificate, key)."""
        key = self.key(name)
        usages = (["serverAuth"] if server else []) + (["clientAuth"] if client else [])
        ext = [
            "basicConstraints = critical, CA:FALSE",
            "keyUsage = critical, digitalSignature, keyEncipherment",
            f"extendedKeyUsage = {', '.join(usages)}",
            "authorityKeyIdentifier = keyid",
        ]
        if dns or ips:
            ext.append("subjectAltName = " + ", ".join([f"DNS:{d}" for d in dns] + [f"IP:{i}" for i in ips]))
        cnf = self._config(name, cn, orgs, ext)
        csr = self.dir / f"{name}.csr"
        crt = self.dir / f"{name}.crt"
        self._run("req", "-new", "-key", key, "-config", cnf, "-out", csr)
        self._run(
            "x509", "-req", "-in", csr, "-CA", self.ca_crt, "-CAkey", self.ca_key,
            "-set_serial", "0x" + secrets.token_hex(16), "-days", "3650", "-sha256",
            "-extfile", cnf, "-extensions", "ext", "-out", crt,
        )  # fmt: skip
        return crt, key


def _b64(path: Path) -> str:
    return base64.b64encode(path.read_bytes()).decode()


def write_kubeconfig(path: Path, server: str, ca: Path, cert: Path, key: Path, user: str) -> Path:
    """Write a self-contained kubeconfig (certificates embedded, mode 0600) for ``user`` to ``path``."""
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "rljob-test", "cluster": {"server": server, "certificate-authority-data": _b64(ca)}}],
        "users": [{"name": user, "user": {"client-certificate-data": _b64(cert), "client-key-data": _b64(key)}}],
        "contexts": [{"name": "rljob-test", "context": {"cluster": "rljob-test", "user": user}}],
        "current-context": "rljob-test",
        "preferences": {},
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    path.chmod(0o600)
    return path
