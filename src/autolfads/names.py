"""The names every part of autolfads agrees on: per-member hyperparameters, metrics, observation models.

Plain constants, no torch, so the command line's help, the Katib writer and the search space read them
without loading the model code.
"""

# Hyperparameters each member may hold its own value of (PBT changes them), and their config section.
MEMBER_HPARAMS = {
    "lr_init": "train",
    "dropout_rate": "model",
    "cd_rate": "model",
    "kl_ic_weight": "train",
    "kl_co_weight": "train",
    "l2_gen_scale": "train",
    "l2_con_scale": "train",
    "l2_ic_enc_scale": "train",
    "l2_ci_enc_scale": "train",
}

# The selection metrics (train.select_metric): early stopping, the best checkpoint, the learning-rate plateau
# rule, PBT's ranking and stopping rule. Both are smoothed (0.3 * previous + 0.7 * current) validation NLLs of
# posterior means, per observed entry.
HELDIN_METRIC = "smth_val_nll_heldin"  # held-in neurons, encoded bins: what the encoder sees
ALL_METRIC = "smth_val_nll_all"  # every reconstructed neuron and bin (val_recon): held-in, held-out, forward
SELECT_METRICS = (ALL_METRIC, HELDIN_METRIC)
DEFAULT_SELECT_METRIC = ALL_METRIC
LEGACY_SELECT_METRIC = HELDIN_METRIC  # what a run or search saved before train.select_metric existed selected by
SAMPLED_METRIC = "smth_val_recon_sampled"  # the references' ranking metric (train.sampled_metric)
# NLB's metrics as nlb_tools names them, and as our metrics.csv columns name them (after "nlb_").
NLB_METRIC_NAMES = {
    "co-bps": "co_bps",
    "vel R2": "vel_r2",
    "psth R2": "psth_r2",
    "fp-bps": "fp_bps",
    "tp corr": "tp_corr",
}
# Metrics PBT can rank members by, with their sign: +1 lower is better, -1 higher is better (NLB metrics
# need data.nlb_targets). Those besides SELECT_METRICS rank PBT only (search --metric).
PBT_METRICS = {
    **dict.fromkeys(SELECT_METRICS, 1.0),
    SAMPLED_METRIC: 1.0,
    **{f"nlb_{name}": -1.0 for name in NLB_METRIC_NAMES.values()},
}
RANK_ONLY_METRICS = tuple(name for name in PBT_METRICS if name not in SELECT_METRICS)
# The validation metrics a summary, a report and the search's state table show (when a run has them).
HEADLINE_METRICS = ("val_nll_heldin", "val_bps", "val_co_bps", "val_fp_bps", "val_r2")
# PBT's selection rules (SearchSettings.selection, search --selection): who copies whom after a generation.
SELECTIONS = ("truncation", "tournament")
# The observation models (model.reconstruction): the config's choices, the model's distributions and the
# data checks are each keyed by these.
OBSERVATION_MODELS = ("poisson", "gaussian", "gamma", "zig")
