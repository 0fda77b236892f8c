"""The operator's probes. kopf's own liveness endpoint serves one path only, and readiness needs a second."""
from __future__ import annotations

from collections.abc import Callable

from aiohttp import web


class HealthServer:
    """/healthz (liveness: the event loop answers) and /readyz (readiness) on one port.

    It listens once the start-up has finished (the API server answered, the job network context is built, the
    reconciler exists and reconciles or stands by for the Lease), as kopf's own liveness endpoint did: a test or a
    probe that sees /healthz answer knows the operator has started. /readyz then says ready until the shutdown
    begins, and 503 from then on, so the metrics Service drops a stopping replica before it goes. A standby is
    ready too: it watches and caches, and a rollout of several replicas must not wait for the leader to leave.
    """

    def __init__(self, port: int, host: str = "0.0.0.0", check: Callable[[], str | None] = lambda: None) -> None:
        self.port, self.host = port, host
        self.ready = False
        self.reason = "starting"
        # Asked on every readiness probe: why this replica is not working although it started (None: it is).
        self.check = check
        self._runner: web.AppRunner | None = None

    @property
    def serving(self) -> bool:
        return self._runner is not None

    async def start(self) -> None:
        app = web.Application()
        app.add_routes([web.get("/healthz", self._healthz), web.get("/readyz", self._readyz)])
        runner = web.AppRunner(app, handle_signals=False, access_log=None)
        await runner.setup()
        try:
            await web.TCPSite(runner, self.host, self.port).start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner

    def set_ready(self, ready: bool, reason: str) -> None:
        self.ready, self.reason = ready, reason

    async def _healthz(self, _: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def _readyz(self, _: web.Request) -> web.Response:
        problem = self.check() if self.ready else None
        ready, reason = (False, problem) if problem else (self.ready, self.reason)
        return web.json_response({"ready": ready, "reason": reason}, status=200 if ready else 503)

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
