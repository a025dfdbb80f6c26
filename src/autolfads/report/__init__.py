"""Reports: one self-contained HTML page with figures of a training run or an AutoLFADS search.

`load` reads a run folder or search workdir, `figures` draws (matplotlib, Agg), `html` assembles the page
and `build` decides what goes in it. `autolfads report DIR` calls write_report; `train` and `search`
call report_at_end when they finish.
"""

from ..layout import REPORT_FILE
from .build import report_at_end, write_report

__all__ = ["REPORT_FILE", "report_at_end", "write_report"]
