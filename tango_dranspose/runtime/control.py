"""Arming and watching a scheduler from another process (CLI, tests) until Tango does it.

The scheduler process binds a ROUTER for clients; requests are JSON objects with ``cmd``
(``arm``, ``stop``, ``abort``, ``parameters``, ``status``, ``wait``) and are answered
concurrently, so a client waiting for the end of a scan does not block another asking for the
status.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

import zmq

from tango_dranspose.runtime import transport
from tango_dranspose.runtime.armrequest import ArmRequest, arm_request
from tango_dranspose.runtime.scheduler import ArmError, Scheduler

log = logging.getLogger("tango_dranspose.control")


class ControlServer:
    def __init__(self, scheduler: Scheduler, bind: str = "tcp://127.0.0.1:0") -> None:
        self.scheduler = scheduler
        self.sock = transport.socket(zmq.ROUTER)
        self.address = transport.bind(self.sock, bind)
        self._task: asyncio.Task[None] | None = None
        self._pending: set[asyncio.Task[None]] = set()

    def start(self) -> None:
        self._task = asyncio.ensure_future(self._loop())

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
        for t in list(self._pending):
            t.cancel()
        self.sock.close(0)

    async def _loop(self) -> None:
        while True:
            frames = await self.sock.recv_multipart()
            ident, body = frames[0], frames[-1]
            task = asyncio.ensure_future(self._answer(ident, body))
            self._pending.add(task)
            task.add_done_callback(self._pending.discard)

    async def _answer(self, ident: bytes, body: bytes) -> None:
        try:
            request = json.loads(body)
            reply = await self.execute(request)
        except ArmError as exc:
            reply = {"ok": False, "error": str(exc)}
        except asyncio.TimeoutError:
            reply = {"ok": False, "error": "timed out", **self.status()}
        except Exception as exc:
            log.exception("request failed")
            reply = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
        await self.sock.send_multipart([ident, b"", json.dumps(reply, default=str).encode()])

    def status(self) -> dict[str, Any]:
        s = self.scheduler
        return {
            "scan": s.summary(),
            "components": {
                n: {"kind": c.kind, "alive": c.alive, "counters": c.counters}
                for n, c in s.components.items()
            },
        }

    async def execute(self, request: dict[str, Any]) -> dict[str, Any]:
        cmd = request.get("cmd")
        s = self.scheduler
        if cmd == "arm":
            try:
                req = arm_request({k: v for k, v in request.items() if k != "cmd"})
            except ValueError as exc:
                return {"ok": False, "error": str(exc)}
            scan_id = await s.arm(
                req.map,
                scan_id=req.scan_id,
                parameters=req.parameter_bytes(),
                metadata=req.scan_metadata(),
                record_dir=req.record_dir,
            )
            return {"ok": True, "scan_id": scan_id}
        if cmd in ("stop", "abort"):
            await s.stop("stopped" if cmd == "stop" else "aborted")
            return {"ok": True}
        if cmd == "parameters":
            values = ArmRequest(map={}, parameters=request.get("values") or {}).parameter_bytes()
            try:
                version = await s.set_parameters(values)
            except ValueError as exc:
                return {"ok": False, "error": str(exc)}
            return {"ok": True, "version": None if version is None else version.number}
        if cmd == "status":
            return {"ok": True, **self.status()}
        if cmd == "wait":
            await s.wait(request.get("seconds"))
            return {"ok": True, **self.status()}
        if cmd == "wait_until":
            await s.wait_until(int(request["completed"]), request.get("seconds") or 30.0)
            return {"ok": True, **self.status()}
        if cmd == "wait_for":
            await s.wait_for(request.get("kinds") or {}, request.get("seconds") or 30.0)
            return {"ok": True, **self.status()}
        return {"ok": False, "error": f"unknown command {cmd!r}"}


class ControlClient:
    """Blocking client for the control server (one request at a time)."""

    def __init__(self, address: str, timeout: float = 60.0) -> None:
        self.address = address
        self.timeout = timeout
        self._ctx: zmq.Context[zmq.Socket[Any]] = zmq.Context.instance()
        self._sock = self._new_socket()

    def _new_socket(self) -> zmq.Socket[Any]:
        sock = self._ctx.socket(zmq.REQ)
        sock.setsockopt(zmq.LINGER, 0)
        sock.connect(self.address)
        return sock

    def request(self, cmd: str, timeout: float | None = None, **kwargs: Any) -> dict[str, Any]:
        self._sock.send(json.dumps({"cmd": cmd, **kwargs}).encode())
        wait = self.timeout if timeout is None else timeout
        if not self._sock.poll(int(wait * 1000)):
            # A REQ socket is stuck after a lost reply; start over with a fresh one.
            self._sock.close(0)
            self._sock = self._new_socket()
            raise TimeoutError(
                f"no answer from the scheduler at {self.address} within {wait:.0f} s"
            )
        reply: dict[str, Any] = json.loads(self._sock.recv())
        return reply

    def arm(self, trigger_map: Any, **kwargs: Any) -> str:
        reply = self.request("arm", map=trigger_map, **kwargs)
        if not reply.get("ok"):
            raise ArmError(reply.get("error", "arming failed"))
        return str(reply["scan_id"])

    def wait(self, seconds: float) -> dict[str, Any]:
        """Until the scan ends (or ``seconds`` pass); returns the status."""
        return self.request("wait", timeout=seconds + 5, seconds=seconds)

    def wait_until(self, completed: int, seconds: float = 30.0) -> dict[str, Any]:
        """Until at least ``completed`` events of the current scan are done (or it ended)."""
        return self.request("wait_until", timeout=seconds + 5, completed=completed, seconds=seconds)

    def wait_for(self, kinds: dict[str, int], seconds: float = 30.0) -> dict[str, Any]:
        """Until at least ``kinds`` components (e.g. {"worker": 2}) are registered."""
        return self.request("wait_for", timeout=seconds + 5, kinds=kinds, seconds=seconds)

    def close(self) -> None:
        self._sock.close(0)
