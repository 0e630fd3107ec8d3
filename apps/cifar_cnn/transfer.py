"""Transfer learning from VGG16 (``--model vgg16``), in stages, each a stage of the run record
(``<run dir>/stage1/``, ``stage2/`` or ``train_all/``: own history, early stopping, backup and
learning curves).

**Stage 1, feature extraction.** The base is frozen and only the new head trains. Two ways, as
Chollet describes (*Deep Learning with Python*, 2nd ed., §8.3): ``--stage1 features`` (the default,
the fast path for CPUs) runs the frozen base *once* over the images and trains the head on the
stored features -- one forward pass of VGG16 per image in total, but no augmentation; ``--stage1
end-to-end`` runs the frozen base on every augmented batch of every epoch.

**Stage 2, fine-tuning** (end to end with augmentation): the top ``--finetune-blocks``
convolutional block(s) are unfrozen and training continues at ``--learning-rate x
--finetune-lr-factor`` (1/100) for ``--finetune-epochs``, at most ``--epochs``: ``--epochs``
bounds every stage, so ``--epochs 1`` is a quick run whatever the stage-2 default.

**One stage** (``--train-all``, ``--pretrain``): every layer trainable from the start, for a
baseline from random weights or to make source-task weights (``--pretrain`` saves the base's).

Input size (``--image-size``, default 32, the native CIFAR size): VGG16 without its top accepts
32x32 (five pools -> 1x1x512). The forward cost grows with the area (4x at 64, 9x at 96); on two
CPU cores 32 is what a run can afford, the weights this machine can make (``--pretrain``) are
learned at 32, and the public ImageNet anchor (~64% frozen, ~80% fine-tuned) is at 32x32. With
ImageNet weights, 64 or 96 bring CIFAR objects closer to ImageNet's scale and usually transfer
better, at 4-9x the cost.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from apps.cifar_cnn import data as D
from apps.cifar_cnn import model as M
from shared.errors import UserError


def stage2_epochs(args) -> int:
    """Fine-tuning's epochs: ``--finetune-epochs``, bounded by ``--epochs`` like every stage."""
    return min(args.finetune_epochs, args.epochs)


def build(args, data):
    """VGG16's base (+ weights) and a new head; the fast path's feature extractor shares the
    base's variables, the whole model shares the head's. Trainable as the first stage wants."""
    base = M.vgg16_base(args.image_size)
    D.load_vgg16_weights(base, data.weights)
    head = M.build_head(len(data.names))
    model = M.build_vgg16_transfer(base, head, args.image_size)
    data.base, data.head = base, head
    print(f"VGG16 weights: {data.weights or 'random initialization'}; input resized to "
          f"{args.image_size}x{args.image_size}")
    if args.train_all:
        M.set_trainable_blocks(base, 5)
        print(f"one stage, every layer trainable: up to {args.epochs} epochs")
        data.record["params"] = {"all": M.print_params("all layers trainable", model)}
    else:
        M.set_trainable_blocks(base, 0)
        plan = (f"stage 2 (top {args.finetune_blocks} block(s), learning rate x "
                f"{args.finetune_lr_factor:g}): up to {stage2_epochs(args)} epochs"
                if args.finetune_blocks else "no stage 2")
        print(f"stage 1 ({args.stage1}): up to {args.epochs} epochs; {plan}")
        data.record["params"] = {"stage1": M.print_params("stage 1 (base frozen)", model)}
    return model


def train_stages(app, args, model, data, run) -> None:
    """The stages ``args`` ask for. Stage 1's test metrics go to ``data.stage1_metrics``."""
    if args.train_all:
        return train_all(app, args, model, data, run)
    done = feature_extraction(app, args, model, data, run)
    if args.finetune_blocks:
        fine_tune(app, args, model, data, run)
    done.unlink(missing_ok=True)  # training complete: a re-run starts afresh


def feature_extraction(app, args, model, data, run) -> Path:
    """Stage 1: the base frozen, the head trained. Returns the stage's finished-weights file,
    which lets a resumed run skip a stage 1 that finished before the interruption."""
    stage = run.stage("stage1")
    done = stage.dir / "done.weights.h5"
    batch = data.examples_per_step
    if done.exists():
        model.load_weights(str(done))
        print(f"stage 1: restored from {done}")
    elif args.stage1 == "features":
        # The fast path: the frozen base sees each image once.
        extractor = M.build_feature_extractor(data.base, args.image_size)
        t0 = time.time()
        f_tr = extractor.predict(D.make_dataset(data.x_train, data.y_train, batch), verbose=0)
        f_val = extractor.predict(data.val, verbose=0)
        secs = time.time() - t0
        data.record["feature_extraction"] = {"seconds": round(secs, 1),
                                             "images_per_sec": (len(f_tr) + len(f_val)) / secs}
        print(f"stage 1: extracted {f_tr.shape[1]} features of {len(f_tr) + len(f_val)} images "
              f"once in {secs:.0f} s")
        compile_stage(app, args, data, run, data.head)
        fit(args, data.head, stage,
            D.feature_dataset(f_tr, data.y_train, batch, training=True, seed=args.seed),
            D.feature_dataset(f_val, data.y_val, batch), args.epochs, batch)
    else:
        fit(args, model, stage, data.train, data.val, args.epochs, batch)
    data.record["examples_per_sec_stage1"] = stage.finish({}, ("accuracy",)).get(
        "examples_per_sec")
    if run.is_chief and not done.exists():
        save_weights_atomic(model, done)
    data.stage1_metrics = {f"stage1_{k}": v for k, v in test_metrics(model, data.test).items()}
    print(f"stage 1 test accuracy {data.stage1_metrics['stage1_accuracy']:.4f}")
    return done


def fine_tune(app, args, model, data, run) -> None:
    """Stage 2: unfreeze the top block(s), recompile (trainability is read at compile time) and
    continue at a ~100x lower learning rate, end to end with augmentation."""
    epochs = stage2_epochs(args)
    M.set_trainable_blocks(data.base, args.finetune_blocks)
    compile_stage(app, args, data, run, model, epochs=epochs, lr_factor=args.finetune_lr_factor)
    data.record["params"]["stage2"] = M.print_params(
        f"stage 2 (top {args.finetune_blocks} block(s) trainable)", model)
    stage = run.stage("stage2")
    fit(args, model, stage, data.train, data.val, epochs, data.examples_per_step)
    data.record["examples_per_sec"] = stage.finish({}, ("accuracy",)).get("examples_per_sec")


def train_all(app, args, model, data, run) -> None:
    """One stage, everything trainable: --pretrain (the source task) and the scratch baseline."""
    stage = run.stage("train_all")
    fit(args, model, stage, data.train, data.val, args.epochs, data.examples_per_step)
    data.record["examples_per_sec"] = stage.finish({}, ("accuracy",)).get("examples_per_sec")
    if args.pretrain and run.is_chief:
        path = save_base_weights(data.base, args.save_weights
                                 or run.dir / "vgg16_cifar_animals.weights.h5")
        print(f"saved the VGG16 base weights to {path} (use: --weights {path})")
        data.record["saved_weights"] = str(path)


def compile_stage(app, args, data, run, model, epochs=None, lr_factor=1.0) -> None:
    """Compile for a stage with the one optimizer factory (inside the strategy's scope)."""
    from shared.optim import make_optimizer
    from shared.precision import jit_compile

    config = app.optimizer_config(args, data, **({"epochs": epochs} if epochs else {}))
    with run.strategy.scope():
        model.compile(optimizer=make_optimizer(config.scaled(lr_factor)), loss=app.loss,
                      metrics=list(app.compile_metrics), jit_compile=jit_compile(args))


def fit(args, model, stage, train, val, epochs, examples_per_step) -> None:
    """``fit`` with the shared callbacks of the stage's own run record."""
    model.fit(train, validation_data=val, epochs=epochs, steps_per_epoch=args.steps_per_epoch,
              callbacks=stage.callbacks(monitor=args.monitor,
                                        examples_per_step=examples_per_step),
              shuffle=False, verbose=args.verbose)


def test_metrics(model, test) -> dict:
    out = model.evaluate(test, return_dict=True, verbose=0)
    return {"accuracy": float(out["accuracy"]), "loss": float(out["loss"])}


def save_weights_atomic(model, path):
    """``save_weights`` into a temporary sibling, then rename: never half a weights file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name[:-len('.weights.h5')]}.tmp.weights.h5")
    try:
        model.save_weights(str(tmp))
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


def save_base_weights(base, path):
    path = str(path)
    if not path.endswith(".weights.h5"):
        raise UserError(f"{path}: weights files must end in .weights.h5")
    return save_weights_atomic(base, path)
