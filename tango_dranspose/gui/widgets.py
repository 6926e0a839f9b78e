"""The panels of the pipeline GUI, as Taurus widgets (PyQt5).

Each panel takes Taurus model names (``tango://HOST:PORT/domain/family/member[/attr]``) with
``setModel``, as a TaurusGui ``PanelDescription`` gives them, and builds what it shows from
the devices at run time: the reducer's published values and the controller's parameters are
only known once the pipeline runs, and change while it does (``Results``, ``Parameters``).

Every panel answers ``pending()``: what it still waits for (no event yet), so that a
screenshot or a test can wait until live values are on screen.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import pyqtgraph as pg
import tango
import taurus
from taurus.core.taurusbasetypes import TaurusEventType
from taurus.external.qt import Qt
from taurus.qt.qtgui.base.taurusbase import DefaultNoneValue
from taurus.qt.qtgui.button import TaurusCommandButton
from taurus.qt.qtgui.display import TaurusLabel
from taurus.qt.qtgui.panel import TaurusForm
from taurus_pyqtgraph import TaurusImageItem, TaurusPlot, TaurusTrend

from tango_dranspose.devices.parameters import attribute_name as parameter_attribute
from tango_dranspose.gui.pipeline import Published, parse_results

NO_VALUE = DefaultNoneValue  # what a Taurus label shows before its first value
PARAMETERS_RECHECK_MS = 10_000  # how often a controller without ``Parameters`` is asked again
PLOT_HEIGHT = 180  # minimum height of each plot of the results panel
TREND_FORCED_READ_MS = 1000  # scalars only push on change: read them every second for trends

# Columns of the services table: attribute, header.
COLUMNS: dict[str, list[tuple[str, str]]] = {
    "DransposeIngester": [
        ("FramesReceived", "Frames"),
        ("FrameRate", "Frames/s"),
        ("DroppedMessages", "Dropped"),
        ("Connected", "Connected"),
    ],
    "DransposeWorker": [
        ("ProcessedEvents", "Events"),
        ("PendingEvents", "Pending"),
        ("Load", "Load"),
        ("Errors", "Errors"),
        ("LastError", "Last error"),
    ],
    "DransposeReducer": [
        ("ProcessedResults", "Results"),
        ("Errors", "Errors"),
        ("LastError", "Last error"),
    ],
}
TITLES = {
    "DransposeIngester": "Ingesters",
    "DransposeWorker": "Workers",
    "DransposeReducer": "Reducer",
}


def plain(value: Any) -> Any:
    """The number of a Taurus value (a pint Quantity for numeric attributes)."""
    return getattr(value, "magnitude", value)


def reason(error: Any) -> str:
    """The first line of a Tango error's description (not the whole DevError dump)."""
    args = getattr(error, "args", None)
    first = args[0] if args else error
    text = str(getattr(first, "desc", first)).strip()
    return text.splitlines()[0].strip() if text else type(error).__name__


def _models(model: Any) -> list[str]:
    if model is None:
        return []
    if isinstance(model, str):
        return model.split()
    return [str(m) for m in model]


def _device_name(full: str) -> str:
    """``domain/family/member`` of ``tango://host:port/domain/family/member``."""
    return full.split("://", 1)[-1].split("/", 1)[-1] if "://" in full else full


def _tango_host(full: str) -> str:
    return full.split("://", 1)[1].split("/", 1)[0] if "://" in full else ""


def _attribute_names(device: str, timeout_ms: int = 1500) -> list[str] | None:
    """The device's attribute names, or None when it does not answer."""
    try:
        proxy = tango.DeviceProxy(device)  # not Taurus' shared proxy: its timeout stays
        proxy.set_timeout_millis(timeout_ms)
        return [str(a) for a in proxy.get_attribute_list()]
    except Exception:
        return None


def _label(model: str, *, state: bool = False, wrap: int = 0) -> TaurusLabel:
    """A Taurus label; State is coloured by its value. The devices send every value with
    ATTR_VALID quality, so Taurus' quality colours would say nothing: values are plain."""
    label = TaurusLabel()
    label.setBgRole("value" if state else "none")
    if state:  # room for the longest state names, not trimmed to "..."
        label.setMinimumWidth(label.fontMetrics().horizontalAdvance("RUNNING") + 16)
    label.setModel(model)
    if wrap:  # room for this many lines of a long text (Status, LastError, paths)
        label.setAutoTrim(False)
        label.setWordWrap(True)
        label.setAlignment(Qt.Qt.AlignLeft | Qt.Qt.AlignVCenter)
        label.setMinimumHeight(label.fontMetrics().lineSpacing() * wrap + 8)
    return label


class Watcher(Qt.QObject):
    """Follows one attribute: ``changed`` carries each new value and ``failed`` each error,
    in the GUI thread; ``arrived`` tells whether one was handled there yet (so a panel whose
    watchers all arrived shows what they brought)."""

    changed = Qt.pyqtSignal(object)
    failed = Qt.pyqtSignal(str)

    def __init__(
        self,
        model: str,
        parent: Qt.QObject | None = None,
        on_change: Callable[[Any], None] | None = None,
        on_error: Callable[[str], None] | None = None,
    ) -> None:
        super().__init__(parent)
        self.model = model
        self.arrived = False
        self.value: Any = None
        # Connected before subscribing: Tango delivers the first event during the
        # subscription, in this call. Slots run in connection order: ``arrived`` turns true
        # right before the panel's own slot runs.
        self.changed.connect(self._mark)
        self.failed.connect(self._mark)
        if on_change is not None:
            self.changed.connect(on_change)
        if on_error is not None:
            self.failed.connect(on_error)
        self._attr = taurus.Attribute(model)
        # Taurus keeps a weak reference to the listener: this object must live as long.
        self._attr.addListener(self._event)

    def _mark(self, _value: Any = None) -> None:
        self.arrived = True

    def _event(self, src: Any, evt_type: Any, value: Any) -> None:  # any thread
        if evt_type == TaurusEventType.Error:
            self.failed.emit(reason(value))
        elif evt_type in (TaurusEventType.Change, TaurusEventType.Periodic) and value is not None:
            self.value = value.rvalue
            self.changed.emit(value.rvalue)

    def stop(self) -> None:
        with contextlib.suppress(Exception):
            self._attr.removeListener(self._event)


class JoinedLabel(Qt.QLabel):
    """A short string spectrum (such as the controller's ``Streams``) as ``a, b, c``."""

    def __init__(self, model: str, parent: Qt.QWidget | None = None) -> None:
        super().__init__(parent)
        self.model = model
        self.setText(NO_VALUE)
        self.setWordWrap(True)
        self._watcher = Watcher(
            model,
            self,
            on_change=lambda value: self.setText(
                ", ".join(str(v) for v in (value or ())) or "(none)"
            ),
        )

    def pending(self) -> list[str]:
        return [] if self._watcher.arrived else [self.model]


class LinesView(Qt.QPlainTextEdit):
    """A string spectrum attribute (such as the controller's ``Ledger``), one line each."""

    def __init__(self, parent: Qt.QWidget | None = None) -> None:
        super().__init__(parent)
        self.setReadOnly(True)
        self.setLineWrapMode(Qt.QPlainTextEdit.NoWrap)
        self.setFont(Qt.QFontDatabase.systemFont(Qt.QFontDatabase.FixedFont))
        self.setPlaceholderText("(empty)")
        self.model = ""
        self._watcher: Watcher | None = None

    def setModel(self, model: Any) -> None:
        if self._watcher is not None:
            self._watcher.stop()
            self._watcher = None
        names = _models(model)
        self.model = names[0] if names else ""
        if self.model:
            self._watcher = Watcher(
                self.model,
                self,
                on_change=self._show,
                on_error=lambda why: self.setPlainText(f"(no value: {why})"),
            )

    def _show(self, value: Any) -> None:
        lines = [] if value is None else [str(v) for v in value]
        if lines != self.toPlainText().splitlines():
            self.setPlainText("\n".join(lines))

    def pending(self) -> list[str]:
        return [self.model] if self._watcher is not None and not self._watcher.arrived else []


class ScanProgress(Qt.QProgressBar):
    """The controller's ``Progress`` as a bar reading "done / total events (percent)"."""

    def __init__(self, controller: str, parent: Qt.QWidget | None = None) -> None:
        super().__init__(parent)
        self.setRange(0, 1000)
        self.setValue(0)
        self.setFormat("no scan yet")
        self._watchers = {
            name: Watcher(f"{controller}/{name}", self, on_change=self._update)
            for name in ("Progress", "CompletedEvents", "TotalEvents")
        }
        self._update()  # the first values came while the watchers were being made

    def _update(self, _value: Any = None) -> None:
        if len(getattr(self, "_watchers", ())) < 3:
            return
        v = {k: plain(w.value) for k, w in self._watchers.items()}
        pct = float(v["Progress"] or 0.0)
        self.setValue(round(10 * max(0.0, min(100.0, pct))))
        done, total = v["CompletedEvents"], v["TotalEvents"]
        if total:
            self.setFormat(f"{int(done or 0)} / {int(total)} events ({pct:.1f}%)")
        else:
            self.setFormat("no scan yet" if not pct else f"{pct:.1f}%")

    def pending(self) -> list[str]:
        return [w.model for w in self._watchers.values() if not w.arrived]


class OverviewPanel(Qt.QWidget):
    """The controller: State, Status, scan, progress, rates, problems; Stop and Abort."""

    ROWS = (
        ("ScanId", "Scan id"),
        ("ScanState", "Scan state"),
        ("EventRate", "Event rate (events/s)"),
        ("Streams", "Streams"),
        ("DroppedFrames", "Dropped frames"),
        ("WorkerErrors", "Worker errors"),
        ("ReducerErrors", "Reducer errors"),
        ("LastError", "Last error"),
        ("ResultFile", "Result file"),
    )

    def __init__(self, parent: Qt.QWidget | None = None) -> None:
        super().__init__(parent)
        self.model = ""
        self.labels: dict[str, TaurusLabel] = {}
        self.progress: ScanProgress | None = None
        self.streams: JoinedLabel | None = None
        self._state: Watcher | None = None
        self._grid = Qt.QGridLayout(self)
        self._grid.setVerticalSpacing(3)

    def setModel(self, model: Any) -> None:
        names = _models(model)
        if not names or self.model:
            return
        ctrl = self.model = names[0]
        grid = self._grid
        grid.addWidget(Qt.QLabel("<b>Controller</b>"), 0, 0)
        name = Qt.QLabel(_device_name(ctrl))
        name.setToolTip(ctrl)
        grid.addWidget(name, 0, 1)
        self.labels["State"] = _label(f"{ctrl}/State", state=True)
        grid.addWidget(Qt.QLabel("State"), 1, 0)
        grid.addWidget(self.labels["State"], 1, 1)
        self.labels["Status"] = _label(f"{ctrl}/Status", wrap=3)
        grid.addWidget(Qt.QLabel("Status"), 2, 0)
        grid.addWidget(self.labels["Status"], 2, 1)
        self.progress = ScanProgress(ctrl, self)
        grid.addWidget(Qt.QLabel("Progress"), 3, 0)
        grid.addWidget(self.progress, 3, 1)
        for row, (attr, text) in enumerate(self.ROWS, start=4):
            value: Qt.QWidget
            if attr == "Streams":
                value = self.streams = JoinedLabel(f"{ctrl}/{attr}", self)
            else:
                value = self.labels[attr] = _label(
                    f"{ctrl}/{attr}", wrap=2 if attr in ("LastError", "ResultFile") else 0
                )
            grid.addWidget(Qt.QLabel(text), row, 0)
            grid.addWidget(value, row, 1)
        buttons = Qt.QHBoxLayout()
        for command, tip in (
            ("Stop", "End the scan now; the reducer finishes with what it has"),
            ("Abort", "End the scan now and mark it aborted"),
        ):
            # Stop and Abort wait up to STOP_GRACE (10 s) for the reducer to finish.
            button = TaurusCommandButton(command=command, text=command, timeout=20)
            button.setModel(ctrl)
            button.setToolTip(tip)
            buttons.addWidget(button)
        buttons.addStretch(1)
        grid.addLayout(buttons, len(self.ROWS) + 4, 0, 1, 2)
        grid.setColumnStretch(1, 1)
        grid.setRowStretch(len(self.ROWS) + 5, 1)
        self._state = Watcher(f"{ctrl}/State", self)

    def pending(self) -> list[str]:
        out = self.progress.pending() if self.progress else [self.model or "controller"]
        if self._state is None or not self._state.arrived:
            out.append(f"{self.model}/State")
        if self.streams is not None:
            out.extend(self.streams.pending())
        return out


class ServicesPanel(Qt.QWidget):
    """One row per ingester, worker and reducer: State and its counters, in one table with a
    header row per kind; the last errors share the last, widest column."""

    def __init__(self, parent: Qt.QWidget | None = None) -> None:
        super().__init__(parent)
        self.model: list[str] = []
        self.cells: dict[str, dict[str, TaurusLabel]] = {}
        self._states: list[Watcher] = []
        self._grid = Qt.QGridLayout(self)
        self._grid.setVerticalSpacing(2)

    def setModel(self, model: Any) -> None:
        names = _models(model)
        if not names or self.model:
            return
        self.model = names
        by_class: dict[str, list[str]] = {cls: [] for cls in COLUMNS}
        for full in names:
            by_class.setdefault(_device_class(full), []).append(full)
        last = 2 + max(len([c for c in cols if c[0] != "LastError"]) for cols in COLUMNS.values())
        grid, row = self._grid, 0
        for cls, devices in by_class.items():
            if not devices:
                continue
            places = {"State": 1}
            headers = {0: TITLES.get(cls, cls), 1: "State"}
            col = 2
            for attr, header in COLUMNS.get(cls, []):
                place = last if attr == "LastError" else col
                col += attr != "LastError"
                places[attr] = place
                headers[place] = header
            for place, text in headers.items():
                grid.addWidget(Qt.QLabel(f"<b>{text}</b>"), row, place)
            row += 1
            for full in devices:
                name = Qt.QLabel(_device_name(full))
                name.setToolTip(full)
                grid.addWidget(name, row, 0)
                cells = {}
                for attr, place in places.items():
                    cells[attr] = _label(f"{full}/{attr}", state=attr == "State")
                    grid.addWidget(cells[attr], row, place)
                self.cells[full] = cells
                self._states.append(Watcher(f"{full}/State", self))
                row += 1
        grid.setColumnStretch(last, 1)
        grid.setRowStretch(row, 1)

    def pending(self) -> list[str]:
        return [w.model for w in self._states if not w.arrived]


def _device_class(full: str) -> str:
    """The Tango class of a device, from the DB (it answers for devices not running too)."""
    try:
        host, port = _tango_host(full).rsplit(":", 1)
        db = tango.Database(host, int(port))
        return str(db.get_class_for_device(_device_name(full)))
    except Exception:
        return "unknown"


class ParametersPanel(Qt.QWidget):
    """The controller's parameters as a writable form: one row per name its ``Parameters``
    attribute lists, for the attribute ``param_<name>`` (by the device's naming rule). A
    controller without ``Parameters`` shows "no parameters" (and is asked again now and
    then)."""

    def __init__(self, parent: Qt.QWidget | None = None) -> None:
        super().__init__(parent)
        self.model = ""
        self.names: list[str] | None = None
        self.form: TaurusForm | None = None
        self._watcher: Watcher | None = None
        self._layout = Qt.QVBoxLayout(self)
        self.note = Qt.QLabel("No parameters.")
        self.note.setWordWrap(True)
        self._layout.addWidget(self.note)
        self._layout.addStretch(1)
        self._timer = Qt.QTimer(self)
        self._timer.setInterval(PARAMETERS_RECHECK_MS)
        self._timer.timeout.connect(self._look)
        self._checked = False

    def setModel(self, model: Any) -> None:
        names = _models(model)
        if not names or self.model:
            return
        self.model = names[0]
        self._look()

    def _look(self) -> None:
        attrs = _attribute_names(self.model)
        self._checked = True
        if attrs is None:
            self.note.setText("No parameters: the controller does not answer.")
            self._timer.start()
            return
        if "parameters" not in {a.lower() for a in attrs}:
            self.note.setText("No parameters (the controller has no Parameters attribute).")
            self._timer.start()
            return
        self._timer.stop()
        self._watcher = Watcher(f"{self.model}/Parameters", self, on_change=self.show_parameters)

    def show_parameters(self, value: Any) -> None:
        """A form of ``param_<name>`` for each name (the value of ``Parameters``)."""
        names = [str(v) for v in (value if value is not None else ())]
        if names == self.names:
            return
        self.names = names
        if self.form is not None:
            self.form.setModel([])
            self._layout.removeWidget(self.form)
            self.form.deleteLater()
            self.form = None
        if not names:
            self.note.setText("No parameters.")
            self.note.show()
            return
        self.note.hide()
        self.form = TaurusForm()
        self.form.setWithButtons(True)
        self.form.setModel([f"{self.model}/{parameter_attribute(n)}" for n in names])
        self._layout.insertWidget(0, self.form)

    def pending(self) -> list[str]:
        if not self._checked:
            return [f"{self.model}/Parameters"]
        if self._watcher is not None and not self._watcher.arrived:
            return [self._watcher.model]
        return []


class _View:
    """One published value on screen and how to tell that its data arrived."""

    def __init__(self, box: Qt.QGroupBox, has_data: Callable[[], bool], close: Callable[[], None]):
        self.box = box
        self.has_data = has_data
        self.close = close


def _hide_legend(plot: Any) -> None:
    """One curve per plot, titled by its box: the legend would only repeat the name (the
    plot's context menu shows it again)."""
    legend = getattr(plot.getPlotItem(), "legend", None)
    if legend is not None:
        legend.hide()


def _items_have_data(plot: Any) -> bool:
    for item in plot.getPlotItem().listDataItems():
        x, _ = item.getData()
        if x is not None and len(x):
            return True
    return False


class ResultsPanel(Qt.QWidget):
    """Live views of the reducer's published values, following its ``Results`` list: a trend
    per numeric scalar, a curve per spectrum, an image view per image, a label per string or
    bool, a text view per list of strings. Views come and go as the list changes."""

    COLUMNS = 3

    def __init__(self, parent: Qt.QWidget | None = None) -> None:
        super().__init__(parent)
        self.model = ""
        self.views: dict[Published, _View] = {}
        self.values: list[Published] = []
        self.others: list[str] = []
        self._watcher: Watcher | None = None
        outer = Qt.QVBoxLayout(self)
        outer.setContentsMargins(0, 0, 0, 0)
        self.note = Qt.QLabel("No reducer in this pipeline.")
        self.note.setWordWrap(True)
        outer.addWidget(self.note)
        scroll = Qt.QScrollArea()
        scroll.setWidgetResizable(True)
        inner = Qt.QWidget()
        self._grid = Qt.QGridLayout(inner)
        scroll.setWidget(inner)
        outer.addWidget(scroll, 1)

    def setModel(self, model: Any) -> None:
        names = _models(model)
        if not names or self.model:
            return
        self.model = names[0]
        self.note.setText("Waiting for the reducer's list of published values ...")
        self._watcher = Watcher(
            f"{self.model}/Results",
            self,
            on_change=self._update,
            on_error=lambda why: self.note.setText(
                f"The reducer is not running or does not answer ({why})."
            ),
        )

    def _update(self, value: Any) -> None:
        values, others = parse_results([str(v) for v in (value if value is not None else ())])
        self.others = others
        if not values:
            text = "No published values yet: they appear with the first scan's results."
        else:
            text = f"{len(values)} published values of {_device_name(self.model)}."
        if others:
            text += " Not shown: " + "; ".join(others)
        self.note.setText(text)
        if values == self.values:
            return
        self.values = values
        for pub in [p for p in self.views if p not in values]:
            view = self.views.pop(pub)
            view.close()
            self._grid.removeWidget(view.box)
            view.box.deleteLater()
        for pub in values:
            if pub not in self.views:
                self.views[pub] = self._make_view(pub)
        # Lay out in the reducer's order (the paths'), in rows of COLUMNS.
        for i, pub in enumerate(values):
            box = self.views[pub].box
            self._grid.removeWidget(box)
            self._grid.addWidget(box, i // self.COLUMNS, i % self.COLUMNS)

    def _make_view(self, pub: Published) -> _View:
        model = f"{self.model}/{pub.attribute}"
        box = Qt.QGroupBox(pub.path)
        box.setToolTip(f"{model} ({pub.kind} {pub.dtype})")
        layout = Qt.QVBoxLayout(box)
        if pub.kind == "scalar" and pub.numeric:
            trend = TaurusTrend()
            trend.setModel([model])
            trend.setForcedReadingPeriod(TREND_FORCED_READ_MS)
            trend.setMinimumHeight(PLOT_HEIGHT)
            _hide_legend(trend)
            layout.addWidget(trend)
            return _View(box, lambda: _items_have_data(trend), lambda: trend.setModel([]))
        if pub.kind == "spectrum" and pub.numeric:
            plot = TaurusPlot()
            plot.setModel([model])
            plot.setMinimumHeight(PLOT_HEIGHT)
            _hide_legend(plot)
            layout.addWidget(plot)
            return _View(box, lambda: _items_have_data(plot), lambda: plot.setModel([]))
        if pub.kind == "image":
            widget = pg.PlotWidget()
            widget.setAspectLocked(True)
            widget.invertY(True)
            item = TaurusImageItem(axisOrder="row-major")
            with contextlib.suppress(Exception):
                item.setColorMap(pg.colormap.get("viridis"))
            widget.addItem(item)
            item.setModel(model)
            widget.setMinimumHeight(PLOT_HEIGHT)
            layout.addWidget(widget)

            def image_has_data() -> bool:
                return isinstance(item.image, np.ndarray) and item.image.size > 0

            return _View(box, image_has_data, lambda: item.setModel(None))
        if pub.kind == "spectrum":
            lines = LinesView()
            lines.setModel(model)
            layout.addWidget(lines)
            return _View(box, lambda: not lines.pending(), lambda: lines.setModel(None))
        label = _label(model)
        layout.addWidget(label)
        return _View(box, lambda: label.text() != NO_VALUE, lambda: label.setModel(""))

    def pending(self) -> list[str]:
        if self._watcher is None:
            return []
        if not self._watcher.arrived:
            return [self._watcher.model]
        return [f"{self.model}/{p.attribute}" for p, v in self.views.items() if not v.has_data()]


PANELS: Sequence[type[Qt.QWidget]] = (
    OverviewPanel,
    ServicesPanel,
    ParametersPanel,
    ResultsPanel,
    LinesView,
)
