"""Train, tune, export and evaluate the detector model shipped with napari-shrec.

The whole recipe, from nothing to ``src/napari_shrec/models/shrec2020_unet.pt``:

    # 1. six shrec2020-preset tomograms, seeds 1000…1005: model_0…3 train, model_4 validation,
    #    model_5 test (never seen in training or tuning)
    python scripts/make_training_set.py --out DATA --tomograms 6 --validation 1
    # 2. train (resumable: run it again to continue), tune thresholds on validation, export,
    #    evaluate on the test tomogram
    python scripts/train_default_model.py --set DATA --work WORK \
        --extra-snr 0.002 --extra-snr 0.01 --tune-snr 0.004 --evaluate-snr 0.004

Stages (``--stage``, default ``all``):

- ``train``: a :class:`~napari_shrec.core.nets.unet.UNet3D` (default width 16, depth 3) on the
  reconstructions of the training models' sample slabs — at the set's SNR and, with
  ``--extra-snr``, also re-noised copies at other SNRs (``SET/snr<S>/model_i``, made from the
  noise-free tilt series in seconds by :func:`~napari_shrec.core.renoise.renoise_dataset`; a
  curriculum: particles the network can see teach it what to look for) — class-mask targets,
  class-balanced
  48³ patches, cross-entropy + Dice, AdamW with a cosine schedule; validation (loc F1, mean
  class F1 with the project's scorer) on a y–x crop of the validation tomogram every few
  epochs. Checkpoints: ``WORK/model.pt`` (last, resumable) and ``WORK/model.best.pt``.
- ``tune``: detect on the whole validation tomogram (weights rounded to float16, as exported)
  with a low ``min_score`` (and ``--test-time-flips``) and tune one threshold per class
  (:func:`~napari_shrec.core.detect.tune_class_thresholds`); fit the candidate rescorer on the
  same candidates (:func:`~napari_shrec.core.rescore.tune_rescorer`, ``--rescorer-c``; with
  the tomogram's density features unless ``--no-image-features``) and tune the thresholds of
  its scores. With ``--tune-snr S`` the validation model re-noised at S is used too, and with
  ``--tune-extra DATASET`` further simulated tomograms (thresholds: the mean over the volumes;
  the rescorer: fitted on all candidates).
- ``export``: the best checkpoint without optimiser state, float16 weights, with the patch size,
  the rescorer and the tuned detection parameters (with and without the rescorer), to
  ``--ship`` (default the package's model).
- ``evaluate``: detect on the test tomogram with the exported model and score it in ``native``
  mode; ``WORK/test_score.json`` and ``WORK/test_report.txt``.

Each stage writes its output atomically and a finished stage is skipped when run again (use
``--redo STAGE`` to repeat one).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEFAULT_SHIP = REPO / "src" / "napari_shrec" / "models" / "shrec2020_unet.pt"
STAGES = ("train", "tune", "export", "evaluate")


def _folders(set_dir: Path) -> dict[str, list[Path]]:
    record_path = set_dir / "set.json"
    if not record_path.is_file():
        raise SystemExit(f"{record_path}: no set.json; make the set with "
                         "scripts/make_training_set.py")
    record = json.loads(record_path.read_text(encoding="utf-8"))
    roles: dict[str, list[Path]] = {"train": [], "validation": [], "test": []}
    for entry in record["tomograms"]:
        roles[entry["role"]].append(set_dir / entry["folder"])
    if not roles["train"] or not roles["validation"] or not roles["test"]:
        raise SystemExit(f"{record_path}: needs train, validation and test models "
                         "(make_training_set.py --validation 1)")
    return roles


def _log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def renoised(folders: list[Path], set_dir: Path, snr: float) -> list[Path]:
    """Copies of ``folders`` at ``snr`` under ``set_dir/snr<snr>/`` (made once; seeds fixed)."""
    from napari_shrec.core.renoise import renoise_dataset

    out = []
    for folder in folders:
        target = set_dir / f"snr{snr:g}" / folder.name
        if not (target / "simulation.json").is_file():
            index = int(folder.name.rsplit("_", 1)[-1])
            seed = 7919 * (index + 1) + int(round(snr * 1e6))
            renoise_dataset(folder, target, snr=snr, seed=seed, overwrite=True)
            _log(f"re-noised {folder.name} at SNR {snr:g} (seed {seed})")
        out.append(target)
    return out


def stage_train(args: argparse.Namespace, roles: dict[str, list[Path]], work: Path) -> None:
    from napari_shrec.core.detect import DetectParams
    from napari_shrec.core.nets.unet import UNet3DConfig
    from napari_shrec.core.train import TrainingData, TrainParams, train

    last = work / "model.pt"
    params = TrainParams(patch_size=(args.patch,) * 3, batch_size=args.batch,
                         epochs=args.epochs, steps_per_epoch=args.steps,
                         learning_rate=args.lr, device=args.device, seed=args.seed,
                         class_weights=args.class_weights, tversky_weight=args.dice_weight,
                         validate_every=args.validate_every, threads=args.threads)
    if last.exists():
        from napari_shrec.core.nets.checkpoint import load_checkpoint
        from napari_shrec.core.train import start_epoch_of

        done = start_epoch_of(load_checkpoint(last))
        if done >= params.epochs:
            _log(f"train: done earlier ({done} epochs)")
            return
        _log(f"train: resuming after epoch {done}")
    folders = list(roles["train"])
    for snr in args.extra_snr:
        folders += renoised(roles["train"], args.set, snr)
    _log(f"train: loading {', '.join(str(p.relative_to(args.set)) for p in folders)}")
    data = TrainingData.from_folders(folders, target="class_mask")
    val = TrainingData.from_folders(roles["validation"], class_names=data.class_names,
                                    target="class_mask")
    if args.val_crop:
        c = args.val_crop
        y0 = (val.volumes[0].shape[1] - c) // 2
        x0 = (val.volumes[0].shape[2] - c) // 2
        val = val.cropped((None, (y0, y0 + c), (x0, x0 + c)))
    _log(f"train: {sum(data.particle_counts().values())} training particles in "
         f"{len(data.volumes)} volumes; validation {val.volumes[0].name}")
    config = UNet3DConfig(n_classes=data.n_channels, width=args.width, depth=args.depth)

    def on_epoch(record: dict) -> None:
        extra = ""
        if "val_loc_F1" in record:
            extra = (f", val loc F1 {record['val_loc_F1']:.3f}, mean class F1 "
                     f"{record['val_mean_class_F1']:.3f} ({record['val_time_s']:.0f} s)")
        _log(f"epoch {record['epoch']}: loss {record['loss']:.4f}, "
             f"{record['patches_per_s']:.1f} patches/s, lr {record['lr']:.2e}{extra}")

    result = train(data, params, model_config=None if last.exists() else config,
                   val_data=val, out=last, resume=last if last.exists() else None,
                   overwrite=True, detect_params=DetectParams(min_score=0.3),
                   on_epoch=on_epoch)
    _log(f"train: best epoch {result.best_epoch} → {result.best_checkpoint}")


def _detect_folder(model, folder: Path, params, **kwargs):
    from napari_shrec.core.pretrained import detect_with_model
    from napari_shrec.io.dataset import load_dataset
    from napari_shrec.io.tomogram import grandmodel_nz

    ds = load_dataset(folder)
    recon = ds.read_volume("reconstruction")
    z0 = int(ds.grandmodel_z_offset)
    nz = grandmodel_nz(ds) or recon.shape[0]
    start = time.perf_counter()
    result = detect_with_model(recon, model, params, slab_z=(z0, z0 + nz),
                               voxel_size_nm=ds.voxel_size_nm, **kwargs)
    elapsed = time.perf_counter() - start
    # reconstruction frame → grandmodel frame (the ground truth's)
    particles = result.particles.copy()
    particles.table["z"] = particles.table["z"] - z0
    return ds, particles, result, elapsed


def _round_to_shipped_weights(model) -> None:
    """Round the model's weights to float16 precision, as ``export`` stores them, so that the
    thresholds and the rescorer are fitted on the very candidates the shipped network gives
    (the float32 weights give a few candidates more or less, e.g. 2996 against 2994)."""
    import torch

    with torch.no_grad():
        for tensor in model.model.state_dict().values():
            if tensor.is_floating_point():
                tensor.copy_(tensor.half().float())


def stage_tune(args, roles, work: Path) -> None:
    from napari_shrec.core.detect import mean_class_thresholds, tune_class_thresholds
    from napari_shrec.core.pretrained import load_model
    from napari_shrec.core.rescore import (
        DEFAULT_IMAGE_RADII_VOX,
        DEFAULT_RADII_VOX,
        tune_rescorer,
    )
    from napari_shrec.io._atomic import write_text_atomic
    from napari_shrec.io.dataset import scoring_ground_truth

    out = work / "thresholds.json"
    if out.exists():
        _log("tune: done earlier")
        return
    model = load_model(work / "model.best.pt", device=args.device)
    _round_to_shipped_weights(model)
    params = model.detect_params(min_score=args.tune_min_score, class_thresholds=None,
                                 test_time_flips=args.test_time_flips)
    folders = [roles["validation"][0]] + [renoised(roles["validation"], args.set, snr)[0]
                                          for snr in args.tune_snr] + list(args.tune_extra)
    image_radii = () if args.no_image_features else DEFAULT_IMAGE_RADII_VOX
    volumes, per_volume, elapsed = [], [], 0.0
    for folder in folders:
        ds, particles, result, seconds = _detect_folder(
            model, folder, params, rescore=False, feature_radii_vox=DEFAULT_RADII_VOX,
            image_radii_vox=image_radii)
        gt = scoring_ground_truth(ds)
        per_volume.append(tune_class_thresholds(
            particles, gt.particles, gt.occupancy_mask, model.class_names,
            class_table=gt.class_table, floor=args.tune_min_score))
        volumes.append((particles, result.features, gt))
        elapsed += seconds
        _log(f"tune: {len(particles)} candidates on {folder} in {seconds:.0f} s")
    thresholds = mean_class_thresholds(per_volume)
    tuning = tune_rescorer(volumes, model.class_names, regularization=args.rescorer_c,
                           image_radii_vox=image_radii,
                           fitted_on={"volumes": [str(f) for f in folders]})
    record = {"validation": [str(f) for f in folders], "min_score": args.tune_min_score,
              "test_time_flips": args.test_time_flips,
              "thresholds": thresholds, "rescored_thresholds": tuning.thresholds,
              "rescorer": tuning.rescorer.to_dict(),
              "candidates": [len(v[0]) for v in volumes], "detect_time_s": elapsed}
    write_text_atomic(out, json.dumps(record, indent=1) + "\n", overwrite=True)
    _log("tune: peak thresholds "
         + ", ".join(f"{k} {v:.2f}" for k, v in thresholds.items())
         + "; rescored thresholds "
         + ", ".join(f"{k} {v:.2f}" for k, v in tuning.thresholds.items()))


def stage_export(args, roles, work: Path) -> None:
    from napari_shrec.core.detect import DetectParams
    from napari_shrec.core.nets.checkpoint import load_checkpoint, save_checkpoint

    ship = Path(args.ship)
    tuned = json.loads((work / "thresholds.json").read_text(encoding="utf-8"))
    best = load_checkpoint(work / "model.best.pt")
    flips = int(tuned.get("test_time_flips", 1))
    peak_params = DetectParams(min_score=tuned["min_score"],
                               class_thresholds=tuned["thresholds"], test_time_flips=flips)
    params = peak_params.replace(class_thresholds=tuned["rescored_thresholds"])
    provenance = dict(best.provenance)
    provenance["recipe"] = ("scripts/make_training_set.py --tomograms 6 --validation 1; "
                            "scripts/train_default_model.py")
    provenance["best_epoch"] = best.epoch
    detection = {"patch_size": list(best.patch_size), "params": params.to_dict(),
                 "params_without_rescorer": peak_params.to_dict(),
                 "rescorer": tuned["rescorer"], "tuned_on": tuned["validation"]}
    history = [{k: v for k, v in r.items() if k != "step_losses"} for r in best.history]
    save_checkpoint(ship, best.model, best.config, class_names=best.class_names,
                    normalization=best.normalization, provenance=provenance,
                    epoch=best.epoch, history=history, overwrite=True,
                    weights_dtype="float16", detection=detection)
    _log(f"export: {ship} ({ship.stat().st_size / 1e6:.1f} MB)")


def stage_evaluate(args, roles, work: Path) -> None:
    from napari_shrec.core.pretrained import load_model

    model = load_model(args.ship, device=args.device)
    tests = [(None, roles["test"][0])] + [(snr, renoised(roles["test"], args.set, snr)[0])
                                          for snr in args.evaluate_snr]
    for snr, folder in tests:
        _evaluate_one(model, folder, work, snr)


def _evaluate_one(model, folder: Path, work: Path, snr: float | None) -> None:
    from napari_shrec.core.score import ScoreParams, score_submission
    from napari_shrec.core.score_report import format_report
    from napari_shrec.io._atomic import write_text_atomic
    from napari_shrec.io.dataset import scoring_ground_truth

    ds, particles, result, elapsed = _detect_folder(model, folder, None)
    gt = scoring_ground_truth(ds)
    score = score_submission(gt.particles, gt.occupancy_mask, particles,
                             ScoreParams(mode="native"), class_table=gt.class_table,
                             submission_name="napari-shrec shipped model")
    suffix = "" if snr is None else f"_snr{snr:g}"
    record = {"test": str(folder), "snr": snr, "loc_F1": score.F1,
              "mean_class_F1": score.mean_class_F1,
              "per_class_F1": dict(score.per_class_F1), "recall": score.recall,
              "precision": score.precision, "n_predicted": len(particles),
              "detect_time_s": elapsed, "timings_s": result.timings_s,
              "n_patches": result.n_patches, "device": model.device}
    write_text_atomic(work / f"test_score{suffix}.json",
                      json.dumps(record, indent=1, default=float) + "\n", overwrite=True)
    write_text_atomic(work / f"test_report{suffix}.txt", format_report([score]) + "\n",
                      overwrite=True)
    _log(f"evaluate {folder}: loc F1 {score.F1:.3f}, mean class F1 {score.mean_class_F1:.3f}, "
         f"{len(particles)} detections in {elapsed:.0f} s")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--set", type=Path, required=True, help="make_training_set.py folder")
    parser.add_argument("--work", type=Path, required=True, help="checkpoints and records")
    parser.add_argument("--ship", type=Path, default=DEFAULT_SHIP)
    parser.add_argument("--stage", choices=(*STAGES, "all"), default="all")
    parser.add_argument("--redo", choices=STAGES, action="append", default=[])
    parser.add_argument("--epochs", type=int, default=75)
    parser.add_argument("--steps", type=int, default=300, help="steps per epoch")
    parser.add_argument("--patch", type=int, default=48)
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--class-weights", choices=("none", "balanced"), default="none")
    parser.add_argument("--dice-weight", type=float, default=0.0)
    parser.add_argument("--width", type=int, default=16)
    parser.add_argument("--depth", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--validate-every", type=int, default=3)
    parser.add_argument("--val-crop", type=int, default=256,
                        help="validate on a central y–x crop of this size (0: whole)")
    parser.add_argument("--extra-snr", type=float, action="append", default=[],
                        help="also train on copies of the training models re-noised at this "
                        "SNR (repeatable)")
    parser.add_argument("--evaluate-snr", type=float, action="append", default=[],
                        help="also evaluate on the test model re-noised at this SNR")
    parser.add_argument("--tune-min-score", type=float, default=0.1)
    parser.add_argument("--tune-snr", type=float, action="append", default=[],
                        help="also tune thresholds and fit the rescorer on the validation model "
                        "re-noised at this SNR (repeatable)")
    parser.add_argument("--tune-extra", type=Path, action="append", default=[],
                        metavar="DATASET",
                        help="also tune thresholds and fit the rescorer on this simulated "
                        "dataset folder, e.g. one more tomogram from make_training_set.py with "
                        "a seed of its own (repeatable)")
    parser.add_argument("--rescorer-c", type=float, default=0.1,
                        help="inverse L2 strength of the candidate rescorer's logistic "
                        "regression")
    parser.add_argument("--no-image-features", action="store_true",
                        help="fit the rescorer on the probability maps alone, without the "
                        "tomogram's density around each candidate")
    parser.add_argument("--test-time-flips", type=int, default=1,
                        help="flips averaged at detection: used to tune the thresholds and "
                        "stored with the exported model (1: off)")
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--device", default="auto")
    args = parser.parse_args(argv)

    roles = _folders(args.set)
    args.work.mkdir(parents=True, exist_ok=True)
    for stage in args.redo:
        target = {"tune": args.work / "thresholds.json"}.get(stage)
        if target is not None and target.exists():
            target.unlink()
    stages = STAGES if args.stage == "all" else (args.stage,)
    runners = {"train": stage_train, "tune": stage_tune, "export": stage_export,
               "evaluate": stage_evaluate}
    for stage in stages:
        runners[stage](args, roles, args.work)
    return 0


if __name__ == "__main__":
    sys.exit(main())
