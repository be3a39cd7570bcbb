"""`convcore train`: train a model zoo network on a data set and report.

Floor 5: parse, build from floors 3-4, print. Defaults per data set (each
overridable by its flag):

    digits (embedded)   lenet_digits  10 epochs  batch 32   Adam 3e-3  cosine
    mnist/fashion-mnist lenet5 (ReLU, max pool)  2 epochs  batch 32  Adam 1e-3  cosine
    cifar10             resnet20      10 epochs  batch 128  SGD 0.1    cosine

Inputs are normalised per channel with statistics of the training set.
At the end: test accuracy, the per-class report, throughput and time.
"""
from __future__ import annotations

import argparse
import importlib.util
import os
import sys
import time

from convcore.cli.args import (
    fraction, non_negative_float, non_negative_int, positive_float, positive_int)
from convcore.data import DATASETS

DEFAULTS = {
    "digits": dict(model="lenet_digits", epochs=10, batch_size=32, optimizer="adam", lr=3e-3),
    # LeNet-5 with its ReLU/max-pool option: the tanh/average original needs
    # more than the 2 epochs the MNIST target allows to pass 98.5%
    "mnist": dict(model="lenet5", model_kwargs={"activation": "relu", "pool": "max"},
                  epochs=2, batch_size=32, optimizer="adam", lr=1e-3),
    "fashion-mnist": dict(model="lenet5", model_kwargs={"activation": "relu", "pool": "max"},
                          epochs=2, batch_size=32, optimizer="adam", lr=1e-3),
    "cifar10": dict(model="resnet20", epochs=10, batch_size=128, optimizer="sgd", lr=0.1),
}
OPTIMIZERS = ("sgd", "adam", "adamw", "rmsprop")
SCHEDULES = ("cosine", "step", "plateau", "none")


def _model_name(text):
    from convcore.models import MODELS
    if text not in MODELS:
        raise argparse.ArgumentTypeError(f"unknown model {text!r}; choose from "
                                         f"{', '.join(MODELS)}")
    return text


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.set_defaults(_parser=parser)  # run() reports cross-option errors as usage errors
    parser.epilog = ("Defaults depend on --dataset: digits trains lenet_digits for 10 epochs "
                     "(Adam 3e-3, batch 32); mnist/fashion-mnist lenet5 (ReLU, max pool) for "
                     "2 (Adam 1e-3, batch 32); cifar10 resnet20 for 10 (SGD 0.1 momentum 0.9, "
                     "batch 128).")
    parser.add_argument("--dataset", choices=DATASETS, default="digits",
                        help="data set: the embedded 8x8 digits (no download, default) or "
                             "files read from --data-dir")
    parser.add_argument("--data-dir", metavar="DIR",
                        help="directory with the MNIST/Fashion-MNIST IDX files (raw or .gz) "
                             "or CIFAR-10's binary batches (required unless --dataset digits)")
    parser.add_argument("--model", type=_model_name, metavar="NAME",
                        help="model zoo network (lenet5, lenet_digits, alexnet, vgg11..vgg19, "
                             "vgg*_bn, googlenet, resnet18/34/50, resnet20); default per data set")
    parser.add_argument("--epochs", type=positive_int, metavar="N",
                        help="epochs to train (the total, including resumed ones)")
    parser.add_argument("--batch-size", type=positive_int, metavar="N",
                        help="training batch size")
    parser.add_argument("--lr", type=positive_float, metavar="LR", help="initial learning rate")
    parser.add_argument("--optimizer", choices=OPTIMIZERS,
                        help="optimizer (sgd uses momentum 0.9)")
    parser.add_argument("--weight-decay", type=non_negative_float, default=0.0, metavar="WD",
                        help="L2 weight decay (default 0; 5e-4 is usual for cifar10 with sgd)")
    parser.add_argument("--schedule", choices=SCHEDULES, default="cosine",
                        help="learning-rate schedule over the epochs (default cosine; "
                             "step: /10 every third of the run; plateau: /10 when the "
                             "training loss stalls)")
    parser.add_argument("--augment", action="store_true",
                        help="random shifts of up to 2 pixels (and horizontal flips for "
                             "cifar10) on the training batches")
    parser.add_argument("--val-fraction", type=fraction, metavar="F",
                        help="hold out this stratified fraction of the training set (0 < F "
                             "< 1) and report validation loss/accuracy every epoch")
    parser.add_argument("--early-stop", type=positive_int, metavar="N",
                        help="stop when the validation loss (training loss without "
                             "--val-fraction) has not improved for N epochs, keeping the "
                             "best weights")
    parser.add_argument("--seed", type=non_negative_int, default=0, metavar="S",
                        help="seed for the weights, the digits split, shuffling and "
                             "augmentation (default 0)")
    parser.add_argument("--threads", type=positive_int, metavar="N",
                        help="threads for convcore's kernels and BLAS (default: 1 for the "
                             "8x8 digits, whose per-layer work is too small to share; else "
                             "all cores or OMP_NUM_THREADS)")
    parser.add_argument("--limit", type=positive_int, metavar="N",
                        help="train on the first N training images only (quick runs)")
    parser.add_argument("--save", metavar="PATH",
                        help="write the trained weights (.npz, load with convcore.load)")
    parser.add_argument("--checkpoint", metavar="PATH",
                        help="write a resumable checkpoint (.npz) after every epoch")
    parser.add_argument("--resume", metavar="PATH",
                        help="continue from a --checkpoint file (give the same other options)")
    parser.add_argument("--plot", metavar="DIR",
                        help="save training curves, the confusion matrix and first-layer "
                             "kernels as PNG files in DIR (needs matplotlib)")
    parser.add_argument("--summary", action="store_true",
                        help="print the model's layer table (output shapes, parameters, "
                             "multiply-adds) before training")
    parser.add_argument("--no-progress", action="store_true",
                        help="no progress bar; print one line per epoch instead")
    parser.add_argument("--distributed", action="store_true",
                        help="data-parallel training on the ranks of an MPI job: run as "
                             "`mpiexec -n N convcore train --distributed` (alone: world "
                             "size 1). --batch-size is per rank; threads per rank default "
                             "to the cores divided by the ranks on the machine; needs "
                             "pip install \"convcore[mpi]\" for N > 1")


def _fail(message, code=1):
    print(f"convcore train: error: {message}", file=sys.stderr)
    return code


def _optimizer(name, params, lr, weight_decay):
    from convcore import optim
    if name == "sgd":
        return optim.SGD(params, lr=lr, momentum=0.9, weight_decay=weight_decay)
    if name == "adam":
        return optim.Adam(params, lr=lr, weight_decay=weight_decay)
    if name == "adamw":
        return optim.AdamW(params, lr=lr, weight_decay=weight_decay or 1e-2)
    return optim.RMSprop(params, lr=lr, weight_decay=weight_decay)


def _scheduler(name, optimizer, epochs):
    from convcore.optim import lr_scheduler
    if name == "cosine":
        return lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(1, epochs))
    if name == "step":
        return lr_scheduler.StepLR(optimizer, step_size=max(1, epochs // 3), gamma=0.1)
    if name == "plateau":
        return lr_scheduler.ReduceLROnPlateau(optimizer, mode="min", factor=0.1, patience=1)
    return None


def _plots(directory, history, result, model):
    from convcore.training import viz
    from convcore.nn import Conv2d
    written = [viz.plot_history(history.curves(), os.path.join(directory, "curves.png")),
               viz.plot_confusion_matrix(result.metrics.confusion,
                                         os.path.join(directory, "confusion.png"),
                                         class_names=result.metrics.class_names)]
    first = next((m for m in model.modules() if isinstance(m, Conv2d)), None)
    if first is not None:
        written.append(viz.plot_kernels(first.weight.data, os.path.join(directory, "kernels.png")))
    return written


def run(args: argparse.Namespace) -> int:
    import convcore
    previous = convcore.get_num_threads()
    try:
        if args.distributed:
            return _train_distributed(args)
        return _train(args)
    finally:  # a caller running several commands in-process keeps its setting
        convcore.set_num_threads(previous)


def _train_distributed(args):
    """_train on every rank of the job: rank 0 reports; a failure on any
    rank ends the job (MPI_Abort) rather than leaving the others waiting."""
    from convcore._runtime import mpi as _mpi
    try:
        _mpi.init()
    except RuntimeError as e:  # started by mpiexec without mpi4py
        return _fail(str(e))
    if not args.threads and _mpi.local_size() > 1:  # ranks x threads <= cores
        args.threads = max(1, (os.cpu_count() or 1) // _mpi.local_size())
    if _mpi.rank() != 0:
        sys.stdout = open(os.devnull, "w")  # one report, from rank 0
    elif _mpi.active():  # if a rank dies, the launcher names its pid and host
        print(f"convcore train: {_mpi.describe_processes()}", file=sys.stderr, flush=True)
    code = _train(args)
    if code and _mpi.active():
        sys.stderr.write(f"convcore train: rank {_mpi.rank()} of {_mpi.world_size()} "
                         f"failed (exit {code}); aborting the job\n")
        sys.stderr.flush()
        _mpi.abort(code)
    return code


def _train(args):
    started = time.perf_counter()
    import convcore
    from convcore import models, nn
    from convcore.data import (Compose, DataLoader, Normalize, RandomHorizontalFlip, RandomShift,
                               load_dataset, stratified_split)
    from convcore.training import EarlyStopping, evaluate, fit

    d = DEFAULTS[args.dataset]
    model_name = args.model or d["model"]
    model_kwargs = {} if args.model else d.get("model_kwargs", {})
    epochs = args.epochs or d["epochs"]
    batch_size = args.batch_size or d["batch_size"]
    opt_name = args.optimizer or d["optimizer"]
    lr = args.lr or (d["lr"] if opt_name == d["optimizer"] else
                     {"sgd": 0.05, "adam": 1e-3, "adamw": 1e-3, "rmsprop": 1e-3}[opt_name])
    if args.dataset != "digits" and not args.data_dir:
        args._parser.error(f"--dataset {args.dataset} reads files: give --data-dir DIR")
    if args.resume and not os.path.isfile(args.resume):
        return _fail(f"--resume: no checkpoint file {args.resume!r}")
    if args.plot and importlib.util.find_spec("matplotlib") is None:
        return _fail("--plot needs matplotlib: pip install 'convcore[plot]'")
    if args.threads:
        convcore.set_num_threads(args.threads)
    elif args.dataset == "digits":
        # A digits epoch is 45 batches of 32 8x8 images, microseconds of
        # work per layer call: a second thread costs more in fork/join and
        # spin-waiting than it saves, even with passive waits
        # (benchmarks/results/spin_waits.md).
        convcore.set_num_threads(1)

    try:
        train_set, test_set = load_dataset(args.dataset, args.data_dir, seed=args.seed)
    except (OSError, ValueError) as e:  # missing or malformed files: say which
        return _fail(str(e))
    if args.limit and args.limit < len(train_set):
        train_set = train_set.subset(range(args.limit))
    val_set = None
    if args.val_fraction:
        try:
            tr, va = stratified_split(train_set.labels, args.val_fraction, args.seed)
        except ValueError as e:
            return _fail(f"--val-fraction {args.val_fraction}: {e}")
        train_set, val_set = train_set.subset(tr), train_set.subset(va, "validation")
    c, h, w = train_set.image_shape
    try:
        model = models.get_model(model_name, num_classes=train_set.num_classes, in_channels=c,
                                 input_size=(h, w), rng=args.seed, **model_kwargs)
    except ValueError as e:
        return _fail(f"--model {model_name} cannot take {args.dataset} images "
                     f"({c}x{h}x{w}): {e}")

    norm = Normalize.fit(train_set.images)
    augment = []
    if args.augment:
        augment = [RandomShift(2)] + ([RandomHorizontalFlip()] if args.dataset == "cifar10" else [])
    train_tf = Compose(*augment, norm) if augment else norm
    train_loader = DataLoader(train_set, batch_size, shuffle=True, seed=args.seed,
                              transform=train_tf, prefetch=2)
    test_loader = DataLoader(test_set, 256, transform=norm)
    val_loader = None if val_set is None else DataLoader(val_set, 256, transform=norm)
    callbacks = []
    if args.early_stop:
        callbacks.append(EarlyStopping("val_loss" if val_set is not None else "train_loss",
                                       patience=args.early_stop))
    optimizer = _optimizer(opt_name, model.parameters(), lr, args.weight_decay)
    scheduler = _scheduler(args.schedule, optimizer, epochs)
    loss = nn.CrossEntropyLoss()
    n_params = sum(p.size for p in model.parameters())
    threads = convcore.get_num_threads()
    from convcore._runtime import mpi as _mpi
    ranks = _mpi.world_size() if args.distributed else 1
    variant = "".join(f", {v}" for v in model_kwargs.values())
    print(f"convcore train: {model_name}{variant} ({n_params:,} parameters) on {args.dataset} "
          f"({len(train_set):,} train"
          + ("" if val_set is None else f" / {len(val_set):,} validation")
          + f" / {len(test_set):,} test, {c}x{h}x{w}), "
          f"{epochs} epoch{'s' if epochs != 1 else ''}, batch {batch_size}, "
          f"{opt_name} lr {lr:g}, "
          + (f"{ranks} ranks x " if ranks > 1 else "")
          + f"{threads} thread{'s' if threads != 1 else ''}"
          + (f" each (global batch {ranks * batch_size})" if ranks > 1 else ""), flush=True)
    if args.summary:
        print(model.summary((c, h, w)), flush=True)
    try:
        history = fit(model, loss, optimizer, train_loader, val_loader, epochs=epochs,
                      scheduler=scheduler, callbacks=callbacks, checkpoint=args.checkpoint,
                      resume=args.resume, progress=not args.no_progress,
                      verbose=args.no_progress, distributed=bool(args.distributed))
    except BrokenPipeError:
        raise  # the output's reader left: convcore.cli ends quietly
    except (OSError, ValueError, FloatingPointError) as e:  # e.g. a foreign checkpoint
        return _fail(str(e))
    except KeyboardInterrupt:
        saved = f"; {args.checkpoint} holds the last finished epoch" if args.checkpoint else ""
        return _fail(f"interrupted{saved}", 130)
    if history.stopped_early:
        print(f"early stop after epoch {history['epoch'][-1]}; kept the weights of epoch "
              f"{history.best_epoch + 1}")
    result = evaluate(model, test_loader, loss, num_classes=test_set.num_classes,
                      class_names=test_set.classes)
    print()
    print(result.report())
    train_secs = sum(history.get("seconds", []))
    seen = sum(s * r for s, r in zip(history.get("seconds", []), history.get("images_per_s", [])))
    print()
    print(f"test accuracy {result.accuracy:.2%} (loss {result.loss:.4f}) on {len(test_set):,} "
          f"images")
    if train_secs > 0:
        print(f"throughput    train {seen / train_secs:,.0f} images/s, "
              f"test {result.images_per_s:,.0f} images/s")
    if args.save and _mpi.rank() == 0:
        convcore.save(model, args.save)
        print(f"saved weights to {args.save}")
    if args.plot and _mpi.rank() == 0:
        for path in _plots(args.plot, history, result, model):
            print(f"wrote {path}")
    print(f"time          {time.perf_counter() - started:.1f} s")
    return 0
