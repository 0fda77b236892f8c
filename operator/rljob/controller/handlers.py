"""kopf's side of the operator: what kopf calls, each a line that hands the work to the `Operator` kopf holds as its
memo (`kopf.run(memo=...)`).

kopf hosts the process: the event loop, the signals and the shutdown, and the order of start-up and clean-up; it
also keeps the login fresh (a rotated token is read again when the API server answers 401). It serves no resource:
the operator's own streams follow the jobs and their children (controller.informer), because kopf's per-event
machinery cost a third of the operator's CPU in a burst of jobs. So nothing here adds a finalizer or writes to a job
for bookkeeping: deleting a job never needs the operator, and its annotations stay clean.

The handlers go into a registry made for the one `kopf.run` that uses them, not kopf's process-wide default one:
importing this module registers nothing.
"""
from __future__ import annotations

from typing import Any

import kopf

from .credentials import Credentials
from .operator import Operator


def registry() -> kopf.OperatorRegistry:
    """The operator's kopf handlers: login, start-up and clean-up, and no resource handler."""
    handlers = kopf.OperatorRegistry()
    kopf.on.login(registry=handlers)(login)
    kopf.on.startup(registry=handlers)(startup)
    kopf.on.cleanup(registry=handlers)(cleanup)
    return handlers


def connection_info(creds: Credentials) -> kopf.ConnectionInfo:
    """kopf's own requests use the operator's credentials (kopf's defaults would import the official client)."""
    token = creds.bearer_token()
    pair = creds.client_certificate()
    basic = token is None and creds.username is not None
    return kopf.ConnectionInfo(
        server=creds.server,
        ca_path=None if creds.ca_data is not None else creds.ca_file,
        ca_data=creds.ca_data,
        insecure=creds.insecure or None,
        scheme="Bearer" if token else None,
        token=token,
        username=creds.username if basic else None,
        password=creds.password if basic else None,
        certificate_data=pair[0] if pair else None,
        private_key_data=pair[1] if pair else None,
        default_namespace=creds.namespace,
        expiration=creds.expires(),
    )


async def login(memo: Operator, **_: Any) -> kopf.ConnectionInfo:
    # On start and whenever the API server answers 401: a rotated token file is read again by then.
    return connection_info(memo.config.credentials)


async def startup(memo: Operator, settings: kopf.OperatorSettings, **_: Any) -> None:
    settings.posting.enabled = False  # the operator posts its own, meaningful events (Kube.event)
    settings.networking.request_timeout = 60
    # kopf serves no resource here (the operator's own streams do): it has no CRD or Namespace to follow, and the
    # operator needs no permission for them.
    settings.scanning.disabled = True
    await memo.start()


async def cleanup(memo: Operator, **_: Any) -> None:
    await memo.stop()
