"""``smallvision <verb>``: parses arguments and calls :mod:`smallvision.api`. Nothing else.

Each verb is one ``add_<verb>`` function — its parser, its examples and its handler side by
side — registered with argparse's ``set_defaults(func=handler)``.
"""
import argparse
import csv
import json
import logging
import os
import sys

from . import __version__
from .checks import DEFAULT_SPLIT
from .distribute import first_process
from .errors import SmallvisionError
from .mixed import MODES as MIXED_MODES
from .runtime import FORMATS, RUNTIMES
from .strategies import LADDER, get as get_strategy
from .strategies.options import (CLASSIFIERS, DEFAULT_BACKBONE, DEFAULT_HEAD_EPOCHS, DEFAULT_VIEWS, HEADS,
                                 PRECISIONS)

SPLIT_TEXT = ",".join(map(str, DEFAULT_SPLIT))


def _size(text):
    """argparse type for --image-size: SIZE or HEIGHT,WIDTH."""
    from .checks import image_size
    try:
        return image_size(text)
    except SmallvisionError as e:
        raise argparse.ArgumentTypeError(str(e).split(". Received")[0]) from None


def _api():
    from . import api
    return api


def _verb(sub, name, help_, examples):
    return sub.add_parser(name, help=help_, description=help_, epilog="examples:\n" + examples.strip("\n"),
                          formatter_class=argparse.RawDescriptionHelpFormatter)


def _runtime_arg(p):
    p.add_argument("--runtime", choices=RUNTIMES, help="how frozen networks run (feature "
                   "extraction, views, predict): ONNX Runtime when installed (auto, the default), or force one")


def _devices_arg(p, what="trains"):
    p.add_argument("--devices", metavar="N|all", help=f"{what} data-parallel on N devices (or all) with the "
                   "backend's engine: JAX keras.distribution.DataParallel, TensorFlow MirroredStrategy; "
                   "--batch-size stays the global batch (default: one device)")


def _mixed_arg(p, what="trains"):
    p.add_argument("--mixed-precision", choices=MIXED_MODES, default="auto",
                   help=f"{what} in Keras' mixed_float16 or mixed_bfloat16 policy: auto (default) is bfloat16 on "
                   "a GPU of compute capability 8.0 or more, float16 on 7.x, off on a CPU; model.keras is "
                   "float32 either way")


def _verbose(args):
    return 2 if getattr(args, "quiet", False) or not sys.stdout.isatty() else 1


# -- demo -------------------------------------------------------------------------------------

def add_demo(sub):
    p = _verb(sub, "demo", "the main job, offline: the from-scratch convnet beside pretrained features on a "
              "stand-in image folder, the ladder's report, a few predictions", """
  smallvision demo                          # offline stand-in: scikit-learn's digits, a few minutes
  smallvision demo --data path/to/photos    # the same on your own folder (the chapter's epochs)
  smallvision demo --strategies scratch,augment,features""")
    p.add_argument("--data", help="use this image folder instead of the digits stand-in")
    p.add_argument("--out", default="smallvision-demo", help="where the demo writes (default: %(default)s)")
    p.add_argument("--strategies", default="scratch,features", help="strategies to compare (default: %(default)s)")
    p.add_argument("--epochs-scale", type=float, help="multiply the strategies' epochs (digits: 0.2; own data: 1)")
    p.add_argument("--image-size", type=_size, help="one size for all (digits: 80; own data: the backbone's)")
    _runtime_arg(p)
    p.set_defaults(func=demo)


def demo(args):
    api = _api()
    out = api.demo(args.out, data=args.data, strategies=args.strategies.split(","), epochs_scale=args.epochs_scale,
                   image_size=args.image_size)
    print(api.summary_table(out))
    print(f"report: {os.path.join(out, 'report.html')} and report.md")
    return 0


# -- scan -------------------------------------------------------------------------------------

def add_scan(sub):
    p = _verb(sub, "scan", "check a data folder: classes, counts, rejected files, duplicates and leakage", """
  smallvision scan path/to/photos                   # classes, counts, rejected files and why
  smallvision scan data/cats_vs_dogs_small --image-size 180   # also fill the decode cache
  smallvision scan photos --write report/           # write index.csv, rejects.csv, duplicates.csv""")
    p.add_argument("data")
    p.add_argument("--image-size", type=_size, help="also decode into the cache at this size")
    p.add_argument("--crop-to-aspect", action="store_true")
    p.add_argument("--split", default=SPLIT_TEXT, help="train,validation,test fractions without split folders")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--write", metavar="DIR", help="write index.csv, rejects.csv, warnings.csv, duplicates.csv here")
    p.set_defaults(func=scan)


def scan(args):
    index, splits = _api().scan(args.data, args.image_size, args.crop_to_aspect, args.split, args.seed,
                                write=args.write)
    print(f"splits ({splits.origin}): " + ", ".join(f"{n} {len(ps)}" for n, ps in splits.items()))
    for d in splits.duplicates[:20]:
        print(f"duplicate ({d['kind']}): {' = '.join(d['files'])}")
    if args.write:
        print(f"wrote index.csv, rejects.csv, warnings.csv, duplicates.csv to {args.write}")
    return 0


# -- audit ------------------------------------------------------------------------------------

def _on_features(p, files, verb):
    """The arguments of a verb that reads DATA's cached features and writes a folder of files."""
    p.add_argument("data", help="folder with one sub-folder per class (or train/ validation/ test/)")
    p.add_argument("--out", help=f"where {files} go (default: {verb}-<data folder name> here; never inside DATA)")
    p.add_argument("--backbone", help=f"the conv base whose cached features are used (default: {DEFAULT_BACKBONE})")
    p.add_argument("--image-size", type=_size, help="default: the backbone's native size")


def _split_seed(p):
    p.add_argument("--split", default=SPLIT_TEXT, help="train,validation,test fractions without split folders")
    p.add_argument("--seed", type=int, default=0)
    _runtime_arg(p)


def add_audit(sub):
    p = _verb(sub, "audit", "what a pretrained network's features say about the data: wrong labels, near-copies "
              "and leaks across splits, photos of something else, poor images", """
  smallvision audit data/cats_vs_dogs_small         # audit-cats_vs_dogs_small/audit.csv and audit.html
  smallvision audit photos --out checks/photos --backbone efficientnet_lite2
  smallvision audit photos --split 0.8,0.1,0.1 --seed 1    # the split as a later train would make it""")
    _on_features(p, "audit.csv and audit.html", "audit")
    p.add_argument("--folds", type=int, default=5, help="K of the out-of-fold probabilities (default: %(default)s)")
    _split_seed(p)
    p.set_defaults(func=audit)


def audit(args):
    result = _api().audit(args.data, out=args.out, backbone=args.backbone, image_size=args.image_size,
                          folds=args.folds, seed=args.seed, split=args.split)
    print(result.summary())
    return 0


def add_curve(sub):
    p = _verb(sub, "curve", "how many images are enough: accuracy against training images per class, and what 2x "
              "and 4x the data would give", """
  smallvision curve data/cats_vs_dogs_small              # curve-cats_vs_dogs_small/curve.html, .md, .csv, .png
  smallvision curve photos --fit-up-to 50 --predict 1000  # fit the small sizes only, predict 1,000 per class
  smallvision curve photos --sizes 10 --seeds 10 --backbone efficientnet_lite2""")
    _on_features(p, "curve.html, .md, .csv and .png", "curve")
    p.add_argument("--sizes", type=int, default=8, help="points of the geometric range (default: %(default)s)")
    p.add_argument("--seeds", type=int, default=5, help="random draws per size (default: %(default)s)")
    p.add_argument("--fit-up-to", type=int, metavar="N", help="fit on the sizes up to N images per class only")
    p.add_argument("--predict", type=lambda t: [int(v) for v in t.split(",")], metavar="N[,N...]",
                   help="images per class to predict (default: 2x and 4x the largest)")
    _split_seed(p)
    p.set_defaults(func=curve)


def curve(args):
    result = _api().curve(args.data, out=args.out, backbone=args.backbone, image_size=args.image_size,
                          sizes=args.sizes, seeds=args.seeds, fit_up_to=args.fit_up_to, predict=args.predict,
                          seed=args.seed, split=args.split)
    print(result.summary())
    return 0


# -- train ------------------------------------------------------------------------------------

def add_train(sub):
    p = _verb(sub, "train", "train a strategy on an image folder and write a run folder", """
  smallvision train data/cats_vs_dogs_small --strategy scratch          # the chapter, 30 epochs
  smallvision train data/cats_vs_dogs_small --strategy augment --epochs 100 --seed 1
  smallvision train photos --strategy augment --image-size 224 --patience 10 --class-weight balanced
  smallvision train data/cats_vs_dogs_small --strategy features                    # EfficientNet-Lite0, offline
  smallvision train data/cats_vs_dogs_small --strategy features --backbone vgg16 --head gap
  smallvision train data/cats_vs_dogs_small --strategy features --weights my_finetuned.pth  # or .safetensors
  smallvision train data/cats_vs_dogs_small --strategy features-augment --epochs 50
  smallvision train data/cats_vs_dogs_small --strategy features --classifier linear --refit
  smallvision train data/cats_vs_dogs_small --strategy features --precision int8    # the base quantized
  smallvision train data/cats_vs_dogs_small --strategy finetune --from runs/20261127-120000-features-augment
  smallvision train data/cats_vs_dogs_small --strategy finetune --head-epochs 20   # head, then fine-tuning
  smallvision train --resume runs/20261127-101500-augment                 # continue after a crash
  smallvision train --resume runs/20261127-101500-augment --epochs 150    # or train further
  smallvision train moved/photos --resume runs/20261127-101500-augment    # the data folder moved
  KERAS_BACKEND=jax smallvision train photos --strategy augment --devices all   # every GPU, DataParallel
  smallvision train photos --strategy augment --devices 2 --batch-size 64       # TensorFlow: MirroredStrategy""")
    p.add_argument("data", nargs="?", help="folder with one sub-folder per class (or train/ validation/ test/)")
    p.add_argument("--strategy", default="scratch", help=f"{', '.join(LADDER)} (see: smallvision strategies)")
    p.add_argument("--resume", metavar="RUN", help="continue the run folder RUN from its last checkpoint")
    p.add_argument("--out", default="runs", help="parent folder of run folders (default: %(default)s)")
    p.add_argument("--epochs", type=int, help="default: the strategy's ("
                   + ", ".join(f"{name} {get_strategy(name).default_epochs}" for name in LADDER) + ")")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--image-size", type=_size, help="SIZE or HEIGHT,WIDTH (default: 180, or the backbone's own size)")
    p.add_argument("--crop-to-aspect", action="store_true", help="crop the centre instead of squashing")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--learning-rate", type=float, help="default: the strategy's (RMSprop 1e-3; Adam 1e-2 for "
                   "--classifier linear; finetune's fine-tuning 1e-5)")
    p.add_argument("--patience", type=int, help="stop after N epochs without a lower val_loss")
    p.add_argument("--class-weight", choices=["none", "balanced"], default="none")
    p.add_argument("--split", default=SPLIT_TEXT, help="train,validation,test fractions without split folders")
    p.add_argument("--backbone", help="pretrained strategies: a conv base (see: smallvision backbones; "
                   f"default {DEFAULT_BACKBONE})")
    p.add_argument("--head", choices=HEADS, help="pretrained strategies: the chapter's Flatten head "
                   "or global average pooling (default: flatten on VGG, gap on the others)")
    p.add_argument("--classifier", choices=CLASSIFIERS, help="pretrained strategies: the chapter's "
                   "Dense 256 + Dropout head (default; chosen on validation, bench/RESULTS.md §9) or a linear "
                   "one (the output layer with L2: a logistic regression)")
    _refit_arg(p)
    p.add_argument("--weights", help="pretrained strategies: a weights file instead of the ImageNet weights "
                   "(.pth in torch.save's zip or legacy format, .safetensors; Keras .h5 for VGG)")
    p.add_argument("--precision", choices=PRECISIONS, help="pretrained strategies: the frozen base's arithmetic: "
                   "fp32 (default) or int8 (quantized, calibrated on 200 training images; ~2x faster extraction, "
                   "bench/RESULTS.md §15)")
    p.add_argument("--from", dest="start", metavar="RUN", help="finetune: the features-augment run (or its "
                   "model.keras) to fine-tune")
    p.add_argument("--head-epochs", type=int, help="finetune without --from: epochs of head training first "
                   f"(default {DEFAULT_HEAD_EPOCHS})")
    p.add_argument("--views", help="features-augment: augmented views cached per training image, one drawn per "
                   f"epoch (default {DEFAULT_VIEWS}), or 'exact': a fresh view every epoch (slower)")
    _devices_arg(p)
    _mixed_arg(p)
    _runtime_arg(p)
    p.add_argument("--quiet", action="store_true", help="one line per epoch instead of progress bars")
    p.set_defaults(func=train)


def _refit_arg(p, what="the model"):
    p.add_argument("--refit", action="store_true", help=f"after {what} is chosen on validation (its best epoch), "
                   "train the final model on train + validation for as many epochs; the run keeps both "
                   "(selection.keras and its figures, model.keras the final one)")


def train(args):
    api = _api()
    if args.resume:  # DATA, if given, is where the run's data folder is now
        run = api.resume(args.resume, epochs=args.epochs, verbose=_verbose(args), data=args.data,
                         devices=args.devices)
    elif not args.data:
        raise SmallvisionError("train needs a DATA folder (or --resume RUN); see smallvision train --help")
    else:
        run = api.train(args.data, args.strategy, out=args.out, epochs=args.epochs, batch_size=args.batch_size,
                        image_size=args.image_size, crop_to_aspect=args.crop_to_aspect, seed=args.seed,
                        learning_rate=args.learning_rate, patience=args.patience,
                        class_weight=args.class_weight, split=args.split, verbose=_verbose(args),
                        backbone=args.backbone, head=args.head, weights=args.weights, start=args.start,
                        head_epochs=args.head_epochs, views=args.views, classifier=args.classifier,
                        precision=args.precision, refit=args.refit, devices=args.devices,
                        mixed_precision=args.mixed_precision)
    if first_process():  # another process of a multi-process training writes nothing and says nothing
        print(api.describe(run))
    return 0


# -- predict ----------------------------------------------------------------------------------

def add_predict(sub):
    p = _verb(sub, "predict", "classify image files with a trained run, a .keras model or an export", """
  smallvision predict runs/20261127-101500-augment new_photos/
  smallvision predict runs/20261127-101500-augment 'shots/*.jpg' --output predictions.csv
  smallvision predict model.keras cat.jpg dog.png --output predictions.json
  smallvision predict runs/20261127-101500-augment/export/onnx new_photos/   # an export folder""")
    p.add_argument("model", metavar="RUN_OR_MODEL", help="a run folder, a .keras file, or an export folder "
                   "(smallvision export; labels.json inside)")
    p.add_argument("paths", nargs="+", metavar="PATH", help="image files, folders or glob patterns")
    p.add_argument("--output", help="write .csv or .json instead of printing")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--tta", action="store_true", help="test-time augmentation: average each image's probabilities "
                   "with its mirror image's (twice the work)")
    _runtime_arg(p)
    p.set_defaults(func=predict)


def add_export(sub):
    p = _verb(sub, "export", "write a run's model in a format people deploy, checked against the run's model", """
  smallvision export runs/20261127-101500-features                   # ONNX: runs/.../export/onnx/
  smallvision export runs/20261127-101500-features --format openvino --out deploy/cats-dogs
  smallvision export model.keras --format litert                     # model-litert/ beside it
  smallvision predict runs/20261127-101500-features/export/onnx photos/   # no TensorFlow needed""")
    p.add_argument("model", metavar="RUN_OR_MODEL")
    p.add_argument("--format", default="onnx", choices=list(FORMATS),
                   help="default: %(default)s")
    p.add_argument("--out", help="the export folder (default: RUN/export/FORMAT)")
    p.add_argument("--check-images", type=int, default=256, help="validation images the export is checked on "
                   "against the Keras model (default: %(default)s)")
    p.set_defaults(func=export)


def export(args):
    result = _api().export(args.model, format=args.format, out=args.out,
                           check_images=args.check_images)
    print(result.describe())
    print(f"labels: {os.path.join(result.folder, 'labels.json')}")
    return 0


def add_serve(sub):
    p = _verb(sub, "serve", "serve a model: an HTTP API (POST /predict) and a page to try it (GET /)", """
  smallvision serve runs/20261127-101500-features                     # http://127.0.0.1:8000/
  smallvision serve runs/20261127-101500-features/export/onnx --port 8080   # an export: no TensorFlow
  smallvision serve runs/20261127-101500-features --host 0.0.0.0 --token "$(openssl rand -hex 16)"
  curl -F file=@cat.jpg http://127.0.0.1:8000/predict                 # or: --data-binary @cat.jpg -H 'Content-Type: image/jpeg'""")
    p.add_argument("model", metavar="RUN_MODEL_OR_EXPORT")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default: %(default)s, this machine only)")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--token", help="require 'Authorization: Bearer TOKEN' on every request but the page")
    p.add_argument("--max-mb", type=float, default=32, help="largest request body in MB (default: %(default)s)")
    _runtime_arg(p)
    p.set_defaults(func=serve)


def serve(args):
    _api().serve(args.model, host=args.host, port=args.port, token=args.token, max_bytes=int(args.max_mb * 2 ** 20))
    return 0


def _write_rows(path, rows):
    if path.endswith(".json"):
        with open(path, "w", encoding="utf-8") as f:
            json.dump(rows, f, indent=2)
        return
    classes = sorted({c for r in rows if r["probabilities"] for c in r["probabilities"]})
    novelty = any("novelty" in r for r in rows)  # a run trained before novelty: no such columns

    def blank(v):
        return "" if v is None else str(v).lower() if isinstance(v, bool) else v
    # surrogateescape: a file name that is not valid UTF-8 is written back as its own bytes
    with open(path, "w", encoding="utf-8", errors="surrogateescape", newline="") as f:
        w = csv.writer(f)
        w.writerow(["path", "class", "probability"] + [f"p_{c}" for c in classes] + ["error"]
                   + (["novelty", "unknown"] if novelty else []))
        for r in rows:
            probs = r["probabilities"] or {}
            w.writerow([r["path"], r["class"] or "", blank(r["probability"])] + [probs.get(c, "") for c in classes]
                       + [r["error"] or ""] + ([blank(r.get("novelty")), blank(r.get("unknown"))] if novelty else []))


def predict(args):
    rows = _api().predict(args.model, args.paths, batch_size=args.batch_size, tta=args.tta)
    if args.output:
        _write_rows(args.output, rows)
        print(f"wrote {len(rows)} predictions to {args.output}")
    else:
        for r in rows:
            mark = f"\tUNKNOWN: unlike its training images (novelty {r['novelty']:.3f})" if r.get("unknown") else ""
            print(f"{r['path']}\t{r['class']}\t{r['probability']:.4f}{mark}" if r["error"] is None
                  else f"{r['path']}\terror: {r['error']}")
        unknown = sum(bool(r.get("unknown")) for r in rows)
        if unknown:
            print(f"{unknown} of {len(rows)} images look unlike anything the model was trained on: its answer for "
                  "them is a guess", file=sys.stderr)
    bad = sum(r["error"] is not None for r in rows)
    if bad:
        print(f"{bad} of {len(rows)} files could not be classified", file=sys.stderr)
    return 0


# -- ladder and report ----------------------------------------------------------------------------

def add_ladder(sub):
    p = _verb(sub, "ladder", "train every strategy on the same data and write a comparison report", """
  smallvision ladder data/cats_vs_dogs_small                          # all five strategies, the chapter's epochs
  smallvision ladder data/cats_vs_dogs_small --epochs-scale 0.2 --seeds 3
  smallvision ladder photos --strategies scratch,features,finetune --backbone efficientnet_lite2
  smallvision ladder photos --seeds scratch=1,augment=1,features=3 --out ladders/photos-3seeds
  smallvision ladder data/cats_vs_dogs_small --patience 10 --refit   # final models on train + validation
  smallvision ladder data/cats_vs_dogs_small          # again, after an interruption: continues
  KERAS_BACKEND=jax smallvision ladder photos --devices all           # every run data-parallel on every GPU""")
    p.add_argument("data", help="folder with one sub-folder per class (or train/ validation/ test/)")
    p.add_argument("--strategies", help=f"comma-separated (default: {','.join(LADDER)})")
    p.add_argument("--backbone", help=f"conv base of the pretrained strategies (default: {DEFAULT_BACKBONE})")
    p.add_argument("--epochs-scale", type=float, default=1.0, help="multiply every strategy's default epochs "
                   "(default: %(default)s, the chapter's)")
    p.add_argument("--seeds", default="1", help="runs per strategy: N, or STRATEGY=N,... (others 1)")
    p.add_argument("--image-size", type=_size, help="one size for all (default: the backbone's native size)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--split", default=SPLIT_TEXT, help="train,validation,test fractions without split folders")
    p.add_argument("--out", help="ladder folder (default: ladders/<data folder name>); re-run to continue")
    p.add_argument("--views", help=f"features-augment and finetune: augmented views per image (default "
                   f"{DEFAULT_VIEWS}) or 'exact'")
    p.add_argument("--patience", type=int, help="every run stops after N epochs without a lower val_loss "
                   "(default: the chapter's epochs in full)")
    p.add_argument("--classifier", choices=CLASSIFIERS, help="the pretrained strategies' head "
                   "(default: the chapter's)")
    _refit_arg(p, "each run's epoch")
    _devices_arg(p, "every run trains")
    _mixed_arg(p, "every run trains")
    p.add_argument("--quiet", action="store_true", help="one line per epoch")
    _runtime_arg(p)
    p.set_defaults(func=ladder)


def ladder(args):
    api = _api()
    out = api.ladder(args.data, out=args.out, strategies=args.strategies and args.strategies.split(","),
                     backbone=args.backbone, epochs_scale=args.epochs_scale, seeds=args.seeds,
                     image_size=args.image_size, batch_size=args.batch_size, split=args.split, views=args.views,
                     patience=args.patience, classifier=args.classifier, refit=args.refit, devices=args.devices,
                     mixed_precision=args.mixed_precision)
    if not first_process():  # another process of the same training writes and reports
        return 0
    print(api.summary_table(out))
    print(f"report: {os.path.join(out, 'report.html')} and report.md")
    return 0


def add_report(sub):
    p = _verb(sub, "report", "write report.md and report.html for a ladder or run folder", """
  smallvision report ladders/cats_vs_dogs_small       # writes report.md and report.html there
  smallvision report runs/20261127-101500-augment --out report/""")
    p.add_argument("path", metavar="LADDER_OR_RUN")
    p.add_argument("--out", help="write the report here (default: inside LADDER_OR_RUN)")
    p.set_defaults(func=report)


def report(args):
    r = _api().report(args.path, args.out)
    print(f"wrote {r['html']} and {r['markdown']}")
    return 0


# -- the registries ---------------------------------------------------------------------------------

def add_strategies(sub):
    _verb(sub, "strategies", "list the training strategies", """
  smallvision strategies""").set_defaults(func=strategies)


def strategies(args):
    for name, summary in _api().strategies().items():
        print(f"{name:<17} {summary}")
    return 0


def add_backbones(sub):
    _verb(sub, "backbones", "list the pretrained conv bases and whether their ImageNet weights are here", """
  smallvision backbones          # which pretrained conv bases have their ImageNet weights here""").set_defaults(
        func=backbones)


def backbones(args):
    print(f"{'name':<20}{'size':>5}  {'input':<7}{'weights from':<42}status")
    for name, size, pre, source, status in _api().backbones():
        print(f"{name:<20}{size:>5}  {pre:<7}{source:<42}{status}")
    return 0


# -- data get / split / check ---------------------------------------------------------------------

def add_data(sub):
    p = _verb(sub, "data", "get the chapter's data set, split a folder, check a folder", """
  smallvision data get cats-vs-dogs --to data              # Microsoft's PetImages archive -> the chapter's split
  smallvision data get cats-vs-dogs --from kagglecatsanddogs_5340.zip --to data
  smallvision data split photos --to photos-split --val 0.15 --test 0.15 --seed 0
  smallvision data check photos --json check.json""")
    p.set_defaults(func=_missing("data", "get, split or check"))
    what = p.add_subparsers(dest="what", metavar="<what>")

    g = _verb(what, "get", "download or read a data set, drop broken files, write the chapter's split", """
  smallvision data get cats-vs-dogs --to data                              # download (resumes if interrupted)
  smallvision data get cats-vs-dogs --from ~/Downloads/kagglecatsanddogs_5340.zip
  smallvision data get cats-vs-dogs --from ~/Downloads/dogs-vs-cats.zip    # Kaggle's zip (holds train.zip)
  smallvision data get cats-vs-dogs --from PetImages/ --sizes 500,250,500   # a smaller split""")
    g.add_argument("dataset", choices=["cats-vs-dogs"])
    g.add_argument("--to", default="data", help="parent folder (default: %(default)s)")
    g.add_argument("--from", dest="source", metavar="FILE_OR_DIR", help="a local archive or extracted folder")
    g.add_argument("--url", help="download from here instead of the official address")
    g.add_argument("--sha256", help="expected sha256 of the archive")
    g.add_argument("--sizes", type=lambda t: [int(v) for v in t.split(",")], metavar="TRAIN,VAL,TEST",
                   help="photos per class and split (default: 1000,500,1000, the chapter's)")
    g.set_defaults(func=data_get)

    s = _verb(what, "split", "stratified, seeded train/validation/test split of a class-folder set", """
  smallvision data split photos --to photos-split                 # 70/15/15, seed 0
  smallvision data split photos --to photos-split --val 0.2 --test 0.2 --seed 3""")
    s.add_argument("data")
    s.add_argument("--to", required=True)
    s.add_argument("--val", type=float, default=0.15)
    s.add_argument("--test", type=float, default=0.15)
    s.add_argument("--seed", type=int, default=0)
    s.set_defaults(func=data_split)

    c = _verb(what, "check", "counts, rejects and why, duplicates and leakage, tiny images, imbalance", """
  smallvision data check photos
  smallvision data check data/cats_vs_dogs_small --json check.json""")
    c.add_argument("data")
    c.add_argument("--json", metavar="FILE", help="also write the report as JSON")
    c.set_defaults(func=data_check)

    a = _verb(what, "apply", "relabel or quarantine files as an audit's decisions file says; --undo puts them back", """
  smallvision data apply photos decisions.csv --dry-run   # what would move, and what is refused
  smallvision data apply photos decisions.csv             # relabel / quarantine into photos/.smallvision/
  smallvision data apply photos --undo                    # the latest apply, undone exactly""")
    a.add_argument("data")
    a.add_argument("decisions", nargs="?", help="CSV with path,action,to,sha256 (audit.html's download)")
    a.add_argument("--undo", action="store_true", help="move back what the latest apply moved")
    a.add_argument("--dry-run", action="store_true", help="check every line and say what would move; move nothing")
    a.set_defaults(func=data_apply)


def data_get(args):
    r = _api().data_get(args.dataset, args.to, args.source, args.url, args.sha256, args.sizes)
    print(f"wrote {r['folder']}: " + ", ".join(f"{s} {sum(c.values())}" for s, c in r["counts"].items())
          + f"; dropped {len(r['dropped'])} broken photos (see DROPPED.tsv)")
    for note in r["notes"]:
        print(f"note: {note}")
    return 0


def data_split(args):
    r = _api().data_split(args.data, args.to, args.val, args.test, args.seed)
    print(f"wrote {r['folder']} ({' and '.join(r['placed_by'])}): "
          + ", ".join(f"{s} {n}" for s, n in r["counts"].items()) + f"; {r['rejected']} rejected")
    return 0


def data_check(args):
    report_, text = _api().data_check(args.data, args.json)
    print(text)
    return 0 if report_["usable"] else 1


def data_apply(args):
    api = _api()
    if args.undo == bool(args.decisions):
        raise SmallvisionError("data apply: give a decisions file, or --undo (not both)")
    result = api.data_undo(args.data) if args.undo else api.data_apply(args.data, args.decisions, args.dry_run)
    print(result.summary())
    return 1 if result.refused else 0


# -- explain ----------------------------------------------------------------------------------

def add_explain(sub):
    p = _verb(sub, "explain", "convolution, padding, strides, pooling, receptive fields, feature maps, heatmaps", """
  smallvision explain conv                                  # the slide's worked example (-8)
  smallvision explain conv photo.jpg --kernel sobel-x --stride 2
  smallvision explain model scratch                         # layer table with receptive fields
  smallvision explain pooling --train data/cats_vs_dogs_small --epochs 5
  smallvision explain activations runs/<run> photo.jpg
  smallvision explain heatmap runs/<run> photo.jpg          # any run: scratch or pretrained""")
    p.set_defaults(func=_missing("explain", "conv, model, pooling, activations or heatmap"))
    what = p.add_subparsers(dest="what", metavar="<what>")

    c = _verb(what, "conv", "apply a kernel to an image with the NumPy reference convolution", """
  smallvision explain conv                                  # the slide's worked example (-8)
  smallvision explain conv photo.jpg --kernel laplacian     # named: edge laplacian sharpen blur gaussian sobel-x sobel-y emboss identity
  smallvision explain conv photo.jpg --kernel my_kernel.txt --padding same --stride 2""")
    c.add_argument("image", nargs="?", help="image file (none: the slide's worked example)")
    c.add_argument("--kernel", default="laplacian", help="a kernel name or a file (text rows or .npy)")
    c.add_argument("--padding", choices=["valid", "same"], default="valid")
    c.add_argument("--stride", type=int, default=1)
    c.add_argument("--out", default="conv.png")
    c.set_defaults(func=lambda a: _print(_api().explain_conv(a.image, a.kernel, a.padding, a.stride, a.out).text))

    m = _verb(what, "model", "layer table: output shape, parameters, receptive field, cumulative stride", """
  smallvision explain model scratch --image-size 180
  smallvision explain model runs/20261127-101500-augment
  smallvision explain model model.keras""")
    m.add_argument("target", metavar="RUN_OR_MODEL_OR_STRATEGY")
    m.add_argument("--image-size", type=_size)
    m.set_defaults(func=lambda a: _print(_api().explain_model(a.target, a.image_size).text))

    po = _verb(what, "pooling", "the chapter's convnet beside the same net without max-pooling", """
  smallvision explain pooling
  smallvision explain pooling --train data/cats_vs_dogs_small --epochs 5""")
    po.add_argument("--image-size", type=_size, help="default: the chapter's 180")
    po.add_argument("--train", metavar="DATA", help="also train both on DATA and compare accuracy")
    po.add_argument("--epochs", type=int, default=5)
    po.add_argument("--out", default="runs", help="parent folder of the two run folders")
    po.set_defaults(func=lambda a: _print(_api().explain_pooling(a.image_size, a.train, a.epochs, a.out).text))

    ac = _verb(what, "activations", "feature maps of the conv layers for one image (PNG grid)", """
  smallvision explain activations runs/20261127-101500-augment cat.jpg --out cat-maps.png
  smallvision explain activations runs/20261127-120000-features cat.jpg   # a pretrained base: one layer per stage""")
    ac.add_argument("run", metavar="RUN_OR_MODEL")
    ac.add_argument("image")
    ac.add_argument("--out", default="activations.png")
    ac.add_argument("--per-layer", type=int, default=16)
    ac.set_defaults(func=lambda a: _print(_api().explain_activations(a.run, a.image, a.out, a.per_layer).text))

    h = _verb(what, "heatmap", "Grad-CAM: where the model looked for its answer (PNG)", """
  smallvision explain heatmap runs/20261127-101500-augment cat.jpg
  smallvision explain heatmap runs/20261127-120000-finetune cat.jpg   # inside the pretrained base
  smallvision explain heatmap runs/20261127-101500-augment cat.jpg --class dogs   # evidence for 'dogs'""")
    h.add_argument("run", metavar="RUN_OR_MODEL")
    h.add_argument("image")
    h.add_argument("--out", default="heatmap.png")
    h.add_argument("--class", dest="class_name", help="explain this class instead of the predicted one")
    h.set_defaults(func=lambda a: _print(_api().explain_heatmap(a.run, a.image, a.out, a.class_name).text))


def _print(text):
    print(text)
    return 0


def _missing(verb, choices):
    def handler(args):
        raise SmallvisionError(f"{verb} what? {choices} (see smallvision {verb} --help)")
    return handler


VERBS = (add_demo, add_scan, add_audit, add_curve, add_train, add_predict, add_export, add_serve, add_ladder, add_report, add_strategies, add_backbones,
         add_data, add_explain)


def parser():
    p = argparse.ArgumentParser(prog="smallvision", description="Train, compare and explain image classifiers "
                                "on small labelled image sets (Keras 3).")
    p.add_argument("--version", action="version", version=f"smallvision {__version__}")
    sub = p.add_subparsers(dest="verb", metavar="<verb>")
    for add in VERBS:
        add(sub)
    return p


def main(argv=None):
    # the application's choices for the process (the library leaves them alone):
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # keep TensorFlow's start-up chatter out
    logging.getLogger("tensorflow").setLevel(logging.ERROR)  # and its "retracing" warnings (many models per process)
    for stream in (sys.stdout, sys.stderr):  # file names that are not valid UTF-8 print as \xff
        if hasattr(stream, "reconfigure"):
            stream.reconfigure(errors="backslashreplace")
    p = parser()
    args = p.parse_args(argv)
    if not args.verb:
        p.print_help()
        return 2
    try:
        if getattr(args, "runtime", None):
            from .runtime import choose
            choose(args.runtime)
        return args.func(args)
    except SmallvisionError as e:
        print(f"smallvision: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("smallvision: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
