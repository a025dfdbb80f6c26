"""Reports: one self-contained HTML page with figures of a training run or an AutoLFADS search.

`load` reads a run folder or search workdir, `figures` draws (matplotlib, Agg), `html` assembles the page,
`summary` writes its tables and `build` decides what goes in it: `autolfads report DIR` calls
build.write_report; `train` and `search` call build.report_at_end when they finish. Import from those
modules: this package imports nothing, so importing it loads neither matplotlib nor torch.
"""
