"""AutoLFADS: population-based training of LFADS models.

`run.search` is the entry point. The pure decisions (`space`, `pbt`), the workdir's layout and record
(`results`), the end of a generation shared by every backend (`generation`) and the backends: `embedded`
(this machine: worker processes, each with a slice of the population on the model's population axis;
`workers`) and `ray_backend` (Ray Tune trials). Importing this package imports nothing heavy: import from
the submodules (`from autolfads.search.run import search`).
"""
