"""Training: the Trainer (`trainer`: the epoch and the training step) and its parts (`batches`,
`validation`, `nlb_scoring`, `schedule`, `member_state`, `objective`, `optim`, `metrics`), and a run on disk
(`run`: train and sample; `checkpoint`, `records`). Importing this package imports nothing heavy: import
from the submodules (`from autolfads.train.run import train`)."""
