"""The write guard: a replica that does not hold the Lease with margin sends nothing that acts."""
from __future__ import annotations

import asyncio

import pytest
from aiohttp import web

from rljob.controller.credentials import Credentials
from rljob.controller.kube import Kube, NotLeading


def test_writes_are_held_back_without_the_lease_but_reads_and_the_lease_itself_go_through() -> None:
    seen: list[tuple[str, str]] = []

    async def handler(request: web.Request) -> web.Response:
        seen.append((request.method, request.path))
        return web.json_response({"metadata": {"name": "x"}})

    async def scenario() -> None:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", handler)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = runner.addresses[0][1]
        kube = Kube(Credentials(server=f"http://127.0.0.1:{port}"))
        leading = [True]
        kube.may_write = lambda: leading[0]
        try:
            await kube.merge_patch("/api/v1/namespaces/a/configmaps/x", {"data": {}})
            leading[0] = False
            with pytest.raises(NotLeading):
                await kube.merge_patch("/api/v1/namespaces/a/configmaps/x", {"data": {}})
            with pytest.raises(NotLeading):
                await kube.delete("v1", "Pod", "a", "p", uid="u")
            with pytest.raises(NotLeading):
                await kube.create({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "namespace": "a"}})
            await kube.get("v1", "Pod", "a", "p")  # a read acts on nothing
            await kube.request("PUT", "/apis/coordination.k8s.io/v1/namespaces/s/leases/l", {"spec": {}})  # renewing
        finally:
            await kube.close()
            await runner.cleanup()

    asyncio.run(scenario())
    assert seen == [("PATCH", "/api/v1/namespaces/a/configmaps/x"), ("GET", "/api/v1/namespaces/a/pods/p"),
                    ("PUT", "/apis/coordination.k8s.io/v1/namespaces/s/leases/l")]
