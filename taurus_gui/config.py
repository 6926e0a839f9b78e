"""TaurusGui configuration: the panels of one tango-dranspose pipeline.

Device names and the reducer's published values are only known at run time, so this module
finds the pipeline's devices in the Tango DB when the GUI starts:

- ``TANGO_HOST``: the Tango DB (``tango-dranspose gui --tango-host`` sets it);
- ``TANGO_DRANSPOSE_PIPELINE``: the pipeline (its devices' ``Pipeline`` property); without
  it, the only pipeline in the DB.

``tango-dranspose gui`` loads it and lays the panels out side by side. By hand:
``TANGO_HOST=... taurus gui taurus_gui/config.py`` (the panels are then tabs).

The panels (``tango_dranspose.gui.widgets``) build their rows, forms and plots from the
devices: one row per ingester, worker and reducer; a form of the controller's parameters
(from its ``Parameters`` attribute, when it has one); a trend, curve or image per value the
reducer publishes (from its ``Results`` attribute, as they appear).
"""

from taurus.qt.qtgui.taurusgui.utils import PanelDescription

from tango_dranspose.gui.pipeline import from_env

_pipeline = from_env()
_controller = _pipeline.full(_pipeline.controller)
_reducer = _pipeline.reducer

GUI_NAME = f"tango-dranspose {_pipeline.name}"
ORGANIZATION = "tango-dranspose"
SINGLE_INSTANCE = False  # one GUI per pipeline, and tests open several

# Panels are created in the alphabetical order of these names (TaurusGui reads the module
# with inspect.getmembers); floating=False keeps them inside the main window.
a_overview = PanelDescription(
    "Overview",
    classname="tango_dranspose.gui.widgets:OverviewPanel",
    model=_controller,
    floating=False,
)
b_services = PanelDescription(
    "Services",
    classname="tango_dranspose.gui.widgets:ServicesPanel",
    model=[_pipeline.full(d) for d in _pipeline.services],
    floating=False,
)
c_parameters = PanelDescription(
    "Parameters",
    classname="tango_dranspose.gui.widgets:ParametersPanel",
    model=_controller,
    floating=False,
)
d_results = PanelDescription(
    "Results",
    classname="tango_dranspose.gui.widgets:ResultsPanel",
    model=_pipeline.full(_reducer) if _reducer else None,
    floating=False,
)
e_ledger = PanelDescription(
    "Ledger",
    classname="tango_dranspose.gui.widgets:LinesView",
    model=f"{_controller}/Ledger",
    floating=False,
)
