"""What the builders need to know beyond the job itself: facts about the operator's installation."""
from __future__ import annotations

from dataclasses import dataclass, field

from ..api import constants as c


@dataclass(frozen=True)
class ApiServerEndpoint:
    """Where the driver reaches the Kubernetes API (NetworkPolicies see endpoints after Service DNAT)."""

    cidr: str
    port: int


@dataclass(frozen=True)
class BuildContext:
    default_image: str = c.DEFAULT_IMAGE
    operator_namespace: str = "rljob-system"
    # Empty: the API server's address is unknown, so the head may reach ports 443/6443 anywhere.
    api_server: tuple[ApiServerEndpoint, ...] = field(default_factory=tuple)
