"""What every pipeline device shares: a runtime loop thread, snapshots, change events.

The runtime service of a device runs on its own asyncio loop (``LoopThread``). Tango request
threads never touch the service's objects: attribute reads return values from the latest
*snapshot*, which the loop computes, and commands hand coroutines to the loop and wait. A
pusher thread refreshes the snapshot every ``EventPeriod`` seconds (sooner after a change the
service reports, at most every ``MIN_PUSH_INTERVAL``), and pushes a change event for each
value that changed, and for State and Status.

Dynamic attributes are added and removed only once this server has its ZeroMQ event publisher
socket (decision 0012): before that, a device interface change crashes cppTango 10.3.3 in the
first ten minutes after the machine boots.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Coroutine
from typing import Any, ClassVar, NoReturn, TypeVar

import numpy as np
import tango
from tango import DevState
from tango.server import Device, device_property

from tango_dranspose.runtime.loopthread import LoopThread

T = TypeVar("T")
MIN_PUSH_INTERVAL = 0.05
PERIODIC_INTERVAL = 1.0
log = logging.getLogger("tango_dranspose.devices")

# Set once this server process has its ZeroMQ event publisher socket (one per process, never
# closed before exit), or once we gave up opening it. cppTango creates it at the first event
# subscription of any client; until then an interface change (add_attribute, remove_attribute,
# Init) may make cppTango push a "device interface changed" event through that missing socket:
# a NULL dereference. See decision 0012 and ``_open_event_socket``.
_EVENT_SOCKET = threading.Event()
# Attempts (one per pusher tick) before giving up on it with a warning and changing attributes
# anyway, rather than never showing them (e.g. should a later cppTango refuse the command).
EVENT_SOCKET_ATTEMPTS = 20


class Snapshot:
    """State, Status and attribute values, computed together on the runtime loop."""

    def __init__(self, state: DevState, status: str, values: dict[str, Any]) -> None:
        self.state = state
        self.status = status
        self.values = values


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        # Arrays are copied once per refresh: the same object is unchanged, a new one is
        # pushed without an element-wise comparison of possibly large images.
        return a is b
    try:
        return bool(a == b)
    except Exception:
        return False


def throw(reason: str, description: str, origin: str) -> NoReturn:
    """Raise a DevFailed whose description a scientist can read (no Python traceback)."""
    tango.Except.throw_exception(reason, description, origin)
    raise AssertionError("unreachable")  # throw_exception always raises


class PipelineDevice(Device):
    """Base of the four device classes; a subclass provides ``start_runtime``/``collect``."""

    Pipeline = device_property(
        dtype=str,
        default_value="default",
        doc="Name of the pipeline this device belongs to; the controller, ingesters, workers "
        "and reducer of one pipeline share it, so several pipelines can share one Tango DB.",
    )
    EventPeriod = device_property(
        dtype=float,
        default_value=0.5,
        doc="Seconds between change events of counters and rates (State and Status changes "
        "are pushed within 50 ms).",
    )

    # Attributes whose change events the pusher sends (besides State and Status).
    pushed: ClassVar[tuple[str, ...]] = ()

    # -- lifecycle -------------------------------------------------------------------------

    def init_device(self) -> None:
        super().init_device()
        # For the pusher thread: the C++ device (and its name) is freed after delete_device,
        # possibly while the pusher is still in a call that cannot see the stop flag.
        self._dev_name = self.get_name()
        self._socket_attempts = 0
        self.set_state(DevState.INIT)
        self.set_status("Starting.")
        self._snapshot = Snapshot(DevState.INIT, "Starting.", {})
        self._pushed_values: dict[str, Any] = {}
        self._fault: str | None = None
        self._last_key: Any = None
        for name in ("State", "Status", *self.pushed):
            self.set_change_event(name, True, False)
        self._runner = LoopThread(f"runtime:{self.get_name()}", tango.EnsureOmniThread)
        self._runner.start()
        self._stop = threading.Event()
        self._wake = threading.Event()
        try:
            self.start_runtime()
        except Exception as exc:
            log.exception("%s cannot start", self.get_name())
            self._fault = str(exc) or type(exc).__name__
        self._refresh()
        self._apply_state(self._snapshot)
        pusher = threading.Thread(
            target=self._push_loop,
            args=(self._stop, self._wake),
            name=f"push:{self.get_name()}",
            daemon=True,
        )
        pusher.start()

    def delete_device(self) -> None:
        # The pusher may be waiting for the device monitor, which the caller holds: do not join
        # it; it sees its stop flag once it gets the monitor and leaves without pushing.
        self._stop.set()
        self._wake.set()
        try:
            self._runner.call(self.stop_runtime(), timeout=15.0)
        except Exception:
            log.exception("%s: stopping the runtime failed", self.get_name())
        self._runner.stop()
        super().delete_device()

    # -- for subclasses --------------------------------------------------------------------

    def start_runtime(self) -> None:
        """Create and start the runtime service (may call ``self.run``)."""

    async def stop_runtime(self) -> None:
        """Close the runtime service."""

    def collect(self) -> Snapshot:
        """Runs on the loop: the device's state, status and attribute values now."""
        return Snapshot(DevState.ON, "Idle.", {})

    def run(self, coro: Coroutine[Any, Any, T], timeout: float | None = 30.0) -> T:
        """Run a coroutine on the runtime loop and wait for it (from a Tango thread)."""
        return self._runner.call(coro, timeout)

    def changed(self) -> None:
        """The service handled a message (called on the loop, for every message: keep it
        cheap). Only a change of ``state_key`` pushes at once; counters wait for the next
        ``EventPeriod`` tick, so that a busy scan does not pay for snapshots per message."""
        key = self.state_key()
        if key != self._last_key:
            self._last_key = key
            self._wake.set()

    def tick_period(self) -> float:
        """Seconds between regular snapshots and pushes."""
        return float(self.EventPeriod)

    def state_key(self) -> Any:
        """Runs on the loop: what, when it changes, is worth pushing at once (State, scan)."""
        return None

    def value(self, name: str, default: Any = None) -> Any:
        return self._snapshot.values.get(name, default)

    # -- snapshots and events --------------------------------------------------------------

    async def _collect(self) -> Snapshot:
        if self._fault is not None:
            return Snapshot(DevState.FAULT, self._fault_status(), {})
        return self.collect()

    def _fault_status(self) -> str:
        return f"Cannot work: {self._fault}"

    def _refresh(self) -> Snapshot:
        try:
            snap = self._runner.call(self._collect(), timeout=5.0)
        except Exception as exc:
            snap = Snapshot(DevState.FAULT, f"The runtime does not answer: {exc}", {})
        self._snapshot = snap
        return snap

    def _apply_state(self, snap: Snapshot) -> bool:
        changed = snap.state != self.get_state() or snap.status != self.get_status()
        if changed:
            self.set_state(snap.state)
            self.set_status(snap.status)
        return changed

    def refresh_now(self) -> None:
        """From a command (which holds the device monitor): make reads right after it return
        fresh values, and push them, so that every value a client can read was also sent as
        an event and the next change is compared with it."""
        self._push(self._refresh())

    def _push_loop(self, stop: threading.Event, wake: threading.Event) -> None:
        with tango.EnsureOmniThread():
            last_push = 0.0
            while not stop.is_set():
                # Wake at least every second for periodic() (DB lookups), whatever EventPeriod.
                woken = wake.wait(min(self.tick_period(), PERIODIC_INTERVAL))
                if stop.is_set():
                    return
                wake.clear()
                try:
                    if not _EVENT_SOCKET.is_set():
                        self._open_event_socket()
                        if stop.is_set():  # it can take seconds: the device may be gone
                            return
                    self.periodic()
                    if not woken and time.monotonic() - last_push < self.tick_period():
                        continue
                    last_push = time.monotonic()
                    # Snapshot and push under the monitor, so that a command's own push
                    # (refresh_now) never interleaves with an older snapshot's.
                    with tango.AutoTangoMonitor(self):
                        if stop.is_set():
                            return
                        self._push(self._refresh())
                except Exception:
                    log.exception("%s: pushing events failed", self._dev_name)
                stop.wait(MIN_PUSH_INTERVAL)

    def _push(self, snap: Snapshot) -> None:
        if _EVENT_SOCKET.is_set():
            # Interface changes wait for the event socket (decision 0012); the pusher opens it
            # within a tick of the server answering, and the next push adds what is missing.
            self.before_push(snap)
        if self._apply_state(snap) or "State" not in self._pushed_values:
            self._pushed_values["State"] = snap.state
            self.push_change_event("State")
            self.push_change_event("Status")
        for name in (*self.pushed, *self.dynamic_pushed()):
            if name not in snap.values:
                continue
            value = snap.values[name]
            if name in self._pushed_values and _same(self._pushed_values[name], value):
                continue
            self._pushed_values[name] = value
            self.push_change_event(name, value, time.time(), tango.AttrQuality.ATTR_VALID)

    def _open_event_socket(self) -> None:
        """Make the admin device create this process's event publisher socket, which stays
        until the server exits: send it the command a client's ``subscribe_event`` sends
        first (``ZmqEventSubscriptionChange``, for our State's change events). No client-side
        subscription: it would put Tango's event consumer into the server, and a DeviceProxy
        destroyed during the server's shutdown then crashes in ``unsubscribe_all_events``.
        Runs on the pusher thread once the server has started (before, there is no admin
        device to answer); if it fails, the next tick tries again, up to
        ``EVENT_SOCKET_ATTEMPTS`` times."""
        util = tango.Util.instance()
        if util.is_svr_starting() or util.is_svr_shutting_down():
            return
        try:
            admin = tango.DeviceProxy(f"dserver/{util.get_ds_name()}")
            admin.set_timeout_millis(3000)
            admin.command_inout(
                "ZmqEventSubscriptionChange", [self._dev_name, "State", "subscribe", "change"]
            )
        except tango.DevFailed as exc:
            self._socket_attempts += 1
            why = exc.args[0].desc.strip()
            if self._socket_attempts < EVENT_SOCKET_ATTEMPTS:
                log.debug("%s: no event socket yet: %s", self._dev_name, why)
                return
            log.warning(
                "%s: cannot make the admin device open the event socket (%s); dynamic "
                "attributes change anyway (see decision 0012)",
                self._dev_name,
                why,
            )
        _EVENT_SOCKET.set()

    def dynamic_pushed(self) -> tuple[str, ...]:
        """Attributes added at run time whose changes are pushed too."""
        return ()

    def periodic(self) -> None:
        """On the pusher thread, before each snapshot (e.g. Tango DB lookups, off the loop)."""

    def before_push(self, snap: Snapshot) -> None:
        """Holding the device monitor, before events go out: the one place to add or remove
        dynamic attributes (it runs only once the server has its event socket)."""
