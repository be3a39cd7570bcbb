"""Floor 4: training a model the way a user would, from floors 1-3.

    loop.py        fit, train_epoch, evaluate, predict, cross_validate,
        |          History, EvalResult, TrainState
    callbacks.py   Callback, EarlyStopping, ModelCheckpoint, LambdaCallback
    checkpoint.py  save_checkpoint / load_checkpoint: exact resume
    schedule_resume.py  a resumed run's cosine schedule keeps the run's length
    divergence.py  a non-finite loss: bad input data or a diverging run
    progress.py    tqdm bar on a terminal, a line per epoch elsewhere
    finetune.py    freeze, unfreeze, replace_head: train only part of a model
    metrics.py     accuracy, confusion matrix, per-class precision/recall/F1
    viz.py         training curves and confusion matrices as PNG (matplotlib)

On several ranks fit trains data-parallel by itself (convcore.distributed).
"""
from convcore.training.checkpoint import load_checkpoint, save_checkpoint
from convcore.training.finetune import (
    find_head, freeze, replace_head, trainable_parameters, unfreeze)
from convcore.training.callbacks import (
    Callback, EarlyStopping, LambdaCallback, ModelCheckpoint)
from convcore.training.loop import (
    HISTORY_KEYS, EvalResult, History, TrainState, cross_validate, evaluate,
    evaluate_multi_crop, fit, predict, train_epoch)

__all__ = ["fit", "train_epoch", "evaluate", "predict", "History", "EvalResult", "TrainState",
           "Callback", "EarlyStopping", "ModelCheckpoint", "LambdaCallback", "cross_validate",
           "evaluate_multi_crop", "freeze", "unfreeze", "replace_head", "find_head",
           "trainable_parameters", "save_checkpoint", "load_checkpoint", "HISTORY_KEYS"]
