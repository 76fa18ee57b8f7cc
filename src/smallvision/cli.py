"""``smallvision <verb>``: parses arguments and calls :mod:`smallvision.api`. Nothing else."""
import argparse
import csv
import json
import os
import sys

from . import __version__
from .errors import SmallvisionError

EXAMPLES = {
    "demo": """examples:
  smallvision demo                          # offline stand-in: scikit-learn's digits, ~1 minute
  smallvision demo --data path/to/photos    # the same on your own folder (180x180, scratch)""",
    "scan": """examples:
  smallvision scan path/to/photos                   # classes, counts, rejected files and why
  smallvision scan data/cats_vs_dogs_small --image-size 180   # also fill the decode cache
  smallvision scan photos --write report/           # write index.csv, rejects.csv, duplicates.csv""",
    "train": """examples:
  smallvision train data/cats_vs_dogs_small --strategy scratch          # the chapter, 30 epochs
  smallvision train data/cats_vs_dogs_small --strategy augment --epochs 100 --seed 1
  smallvision train photos --strategy augment --image-size 224 --patience 10 --class-weight balanced
  smallvision train data/cats_vs_dogs_small --strategy features                    # EfficientNet-Lite0, offline
  smallvision train data/cats_vs_dogs_small --strategy features --backbone vgg16 --head gap
  smallvision train data/cats_vs_dogs_small --strategy features-augment --epochs 50
  smallvision train data/cats_vs_dogs_small --strategy finetune --from runs/20261127-120000-features-augment
  smallvision train data/cats_vs_dogs_small --strategy finetune --head-epochs 20   # head, then fine-tuning
  smallvision train --resume runs/20261127-101500-augment                 # continue after a crash
  smallvision train --resume runs/20261127-101500-augment --epochs 150    # or train further
  smallvision train moved/photos --resume runs/20261127-101500-augment    # the data folder moved""",
    "predict": """examples:
  smallvision predict runs/20261127-101500-augment new_photos/
  smallvision predict runs/20261127-101500-augment 'shots/*.jpg' --output predictions.csv
  smallvision predict model.keras cat.jpg dog.png --output predictions.json""",
    "ladder": """examples:
  smallvision ladder data/cats_vs_dogs_small                          # all five strategies, the chapter's epochs
  smallvision ladder data/cats_vs_dogs_small --epochs-scale 0.2 --seeds 3
  smallvision ladder photos --strategies scratch,features,finetune --backbone efficientnet_lite2
  smallvision ladder photos --seeds scratch=1,augment=1,features=3 --out ladders/photos-3seeds
  smallvision ladder data/cats_vs_dogs_small          # again, after an interruption: continues""",
    "report": """examples:
  smallvision report ladders/cats_vs_dogs_small       # writes report.md and report.html there
  smallvision report runs/20261127-101500-augment --out report/""",
    "strategies": """examples:
  smallvision strategies""",
    "backbones": """examples:
  smallvision backbones          # which pretrained conv bases have their ImageNet weights here""",
    "explain": """examples:
  smallvision explain conv                                  # the slide's worked example (-8)
  smallvision explain conv photo.jpg --kernel sobel-x --stride 2
  smallvision explain model scratch                         # layer table with receptive fields
  smallvision explain pooling --train data/cats_vs_dogs_small --epochs 5
  smallvision explain activations runs/<run> photo.jpg
  smallvision explain heatmap runs/<run> photo.jpg""",
    "data": """examples:
  smallvision data get cats-vs-dogs --to data              # Microsoft's PetImages archive -> the chapter's split
  smallvision data get cats-vs-dogs --from kagglecatsanddogs_5340.zip --to data
  smallvision data split photos --to photos-split --val 0.15 --test 0.15 --seed 0
  smallvision data check photos --json check.json""",
    "data get": """examples:
  smallvision data get cats-vs-dogs --to data                              # download (resumes if interrupted)
  smallvision data get cats-vs-dogs --from ~/Downloads/kagglecatsanddogs_5340.zip
  smallvision data get cats-vs-dogs --from ~/Downloads/dogs-vs-cats.zip    # Kaggle's zip (holds train.zip)
  smallvision data get cats-vs-dogs --from PetImages/ --sizes 500,250,500   # a smaller split""",
    "data split": """examples:
  smallvision data split photos --to photos-split                 # 70/15/15, seed 0
  smallvision data split photos --to photos-split --val 0.2 --test 0.2 --seed 3""",
    "data check": """examples:
  smallvision data check photos
  smallvision data check data/cats_vs_dogs_small --json check.json""",
    "explain conv": """examples:
  smallvision explain conv                                  # the slide's worked example (-8)
  smallvision explain conv photo.jpg --kernel laplacian     # named: edge laplacian sharpen blur gaussian sobel-x sobel-y emboss identity
  smallvision explain conv photo.jpg --kernel my_kernel.txt --padding same --stride 2""",
    "explain model": """examples:
  smallvision explain model scratch --image-size 180
  smallvision explain model runs/20261127-101500-augment
  smallvision explain model model.keras""",
    "explain pooling": """examples:
  smallvision explain pooling
  smallvision explain pooling --train data/cats_vs_dogs_small --epochs 5""",
    "explain activations": """examples:
  smallvision explain activations runs/20261127-101500-augment cat.jpg --out cat-maps.png""",
    "explain heatmap": """examples:
  smallvision explain heatmap runs/20261127-101500-augment cat.jpg
  smallvision explain heatmap runs/20261127-101500-augment cat.jpg --class dogs   # evidence for 'dogs'""",
}


def _size(text):
    try:
        parts = [int(p) for p in text.replace("x", ",").split(",")]
    except ValueError:
        parts = []
    if len(parts) == 1:
        parts *= 2
    if len(parts) != 2:
        raise argparse.ArgumentTypeError(f"expected SIZE or HEIGHT,WIDTH in pixels, got {text!r}")
    return tuple(parts)


def _parser():
    p = argparse.ArgumentParser(prog="smallvision", description="Train, compare and explain image classifiers "
                                "on small labelled image sets (Keras 3).")
    p.add_argument("--version", action="version", version=f"smallvision {__version__}")
    sub = p.add_subparsers(dest="verb", metavar="<verb>")

    def verb(name, help_, parent=None, prefix=""):
        """A sub-command with its examples from EXAMPLES (``prefix`` for the data/explain sub-verbs)."""
        return (parent or sub).add_parser(name, help=help_, description=help_, epilog=EXAMPLES[prefix + name],
                                          formatter_class=argparse.RawDescriptionHelpFormatter)

    d = verb("demo", "the main job, offline: write a stand-in image folder, train, evaluate, predict")
    d.add_argument("--data", help="use this image folder instead of the digits stand-in")
    d.add_argument("--out", default="smallvision-demo", help="where the demo writes (default: %(default)s)")
    d.add_argument("--strategy", default="scratch")
    d.add_argument("--epochs", type=int)
    d.add_argument("--image-size", type=_size)

    s = verb("scan", "check a data folder: classes, counts, rejected files, duplicates and leakage")
    s.add_argument("data")
    s.add_argument("--image-size", type=_size, help="also decode into the cache at this size")
    s.add_argument("--crop-to-aspect", action="store_true")
    s.add_argument("--split", default="0.7,0.15,0.15", help="train,validation,test fractions without split folders")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--write", metavar="DIR", help="write index.csv, rejects.csv, warnings.csv, duplicates.csv here")

    t = verb("train", "train a strategy on an image folder and write a run folder")
    t.add_argument("data", nargs="?", help="folder with one sub-folder per class (or train/ validation/ test/)")
    t.add_argument("--strategy", default="scratch", help="scratch, augment, features, features-augment, finetune "
                   "(see: smallvision strategies)")
    t.add_argument("--resume", metavar="RUN", help="continue the run folder RUN from its last checkpoint")
    t.add_argument("--out", default="runs", help="parent folder of run folders (default: %(default)s)")
    t.add_argument("--epochs", type=int, help="default: the strategy's (scratch 30, augment 100, features 20, "
                   "features-augment 50, finetune 30)")
    t.add_argument("--batch-size", type=int, default=32)
    t.add_argument("--image-size", type=_size, help="SIZE or HEIGHT,WIDTH (default: 180, or the backbone's own size)")
    t.add_argument("--crop-to-aspect", action="store_true", help="crop the centre instead of squashing")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--learning-rate", type=float, help="RMSprop learning rate (default: the strategy's, 1e-3)")
    t.add_argument("--patience", type=int, help="stop after N epochs without a lower val_loss")
    t.add_argument("--class-weight", choices=["none", "balanced"], default="none")
    t.add_argument("--split", default="0.7,0.15,0.15", help="train,validation,test fractions without split folders")
    t.add_argument("--backbone", help="pretrained strategies: a conv base (see: smallvision backbones; "
                   "default efficientnet_lite0)")
    t.add_argument("--head", choices=["flatten", "gap"], help="pretrained strategies: the chapter's Flatten head "
                   "or global average pooling (default: flatten on VGG, gap on the others)")
    t.add_argument("--weights", help="pretrained strategies: a weights file instead of the ImageNet weights")
    t.add_argument("--from", dest="start", metavar="RUN", help="finetune: the features-augment run (or its "
                   "model.keras) to fine-tune")
    t.add_argument("--head-epochs", type=int, help="finetune without --from: epochs of head training first "
                   "(default 50)")
    t.add_argument("--quiet", action="store_true", help="one line per epoch instead of progress bars")

    pr = verb("predict", "classify image files with a trained run or .keras model")
    pr.add_argument("model", metavar="RUN_OR_MODEL")
    pr.add_argument("paths", nargs="+", metavar="PATH", help="image files, folders or glob patterns")
    pr.add_argument("--output", help="write .csv or .json instead of printing")
    pr.add_argument("--batch-size", type=int, default=32)

    la = verb("ladder", "train every strategy on the same data and write a comparison report")
    la.add_argument("data", help="folder with one sub-folder per class (or train/ validation/ test/)")
    la.add_argument("--strategies", help="comma-separated (default: scratch,augment,features,features-augment,"
                    "finetune)")
    la.add_argument("--backbone", help="conv base of the pretrained strategies (default: efficientnet_lite0)")
    la.add_argument("--epochs-scale", type=float, default=1.0, help="multiply every strategy's default epochs "
                    "(default: %(default)s, the chapter's)")
    la.add_argument("--seeds", default="1", help="runs per strategy: N, or STRATEGY=N,... (others 1)")
    la.add_argument("--image-size", type=_size, help="one size for all (default: the backbone's native size)")
    la.add_argument("--batch-size", type=int, default=32)
    la.add_argument("--split", default="0.7,0.15,0.15", help="train,validation,test fractions without split folders")
    la.add_argument("--out", help="ladder folder (default: ladders/<data folder name>); re-run to continue")
    la.add_argument("--quiet", action="store_true", help="one line per epoch")

    rp = verb("report", "write report.md and report.html for a ladder or run folder")
    rp.add_argument("path", metavar="LADDER_OR_RUN")
    rp.add_argument("--out", help="write the report here (default: inside LADDER_OR_RUN)")

    verb("strategies", "list the training strategies")
    verb("backbones", "list the pretrained conv bases and whether their ImageNet weights are here")

    da = verb("data", "get the chapter's data set, split a folder, check a folder")
    das = da.add_subparsers(dest="what", metavar="<what>")

    def data_verb(name, help_):
        return verb(name, help_, das, "data ")

    g = data_verb("get", "download or read a data set, drop broken files, write the chapter's split")
    g.add_argument("dataset", choices=["cats-vs-dogs"])
    g.add_argument("--to", default="data", help="parent folder (default: %(default)s)")
    g.add_argument("--from", dest="source", metavar="FILE_OR_DIR", help="a local archive or extracted folder")
    g.add_argument("--url", help="download from here instead of the official address")
    g.add_argument("--sha256", help="expected sha256 of the archive")
    g.add_argument("--sizes", type=lambda t: [int(v) for v in t.split(",")], metavar="TRAIN,VAL,TEST",
                   help="photos per class and split (default: 1000,500,1000, the chapter's)")
    sp = data_verb("split", "stratified, seeded train/validation/test split of a class-folder set")
    sp.add_argument("data")
    sp.add_argument("--to", required=True)
    sp.add_argument("--val", type=float, default=0.15)
    sp.add_argument("--test", type=float, default=0.15)
    sp.add_argument("--seed", type=int, default=0)
    ck = data_verb("check", "counts, rejects and why, duplicates and leakage, tiny images, imbalance")
    ck.add_argument("data")
    ck.add_argument("--json", metavar="FILE", help="also write the report as JSON")

    ex = verb("explain", "convolution, padding, strides, pooling, receptive fields, feature maps, heatmaps")
    exs = ex.add_subparsers(dest="what", metavar="<what>")

    def what(name, help_):
        return verb(name, help_, exs, "explain ")

    c = what("conv", "apply a kernel to an image with the NumPy reference convolution")
    c.add_argument("image", nargs="?", help="image file (none: the slide's worked example)")
    c.add_argument("--kernel", default="laplacian", help="a kernel name or a file (text rows or .npy)")
    c.add_argument("--padding", choices=["valid", "same"], default="valid")
    c.add_argument("--stride", type=int, default=1)
    c.add_argument("--out", default="conv.png")
    m = what("model", "layer table: output shape, parameters, receptive field, cumulative stride")
    m.add_argument("target", metavar="RUN_OR_MODEL_OR_STRATEGY")
    m.add_argument("--image-size", type=_size)
    po = what("pooling", "the chapter's convnet beside the same net without max-pooling")
    po.add_argument("--image-size", type=_size, default=(180, 180))
    po.add_argument("--train", metavar="DATA", help="also train both on DATA and compare accuracy")
    po.add_argument("--epochs", type=int, default=5)
    po.add_argument("--out", default="runs", help="parent folder of the two run folders")
    a = what("activations", "feature maps of every conv layer for one image (PNG grid)")
    a.add_argument("run", metavar="RUN_OR_MODEL")
    a.add_argument("image")
    a.add_argument("--out", default="activations.png")
    a.add_argument("--per-layer", type=int, default=16)
    h = what("heatmap", "Grad-CAM: where the model looked for its answer (PNG)")
    h.add_argument("run", metavar="RUN_OR_MODEL")
    h.add_argument("image")
    h.add_argument("--out", default="heatmap.png")
    h.add_argument("--class", dest="class_name", help="explain this class instead of the predicted one")
    return p


def _write_rows(path, rows):
    if path.endswith(".json"):
        with open(path, "w", encoding="utf-8") as f:
            json.dump(rows, f, indent=2)
        return
    classes = sorted({c for r in rows if r["probabilities"] for c in r["probabilities"]})
    with open(path, "w", encoding="utf-8", newline="") as f:
        w = csv.writer(f)
        w.writerow(["path", "class", "probability"] + [f"p_{c}" for c in classes] + ["error"])
        for r in rows:
            probs = r["probabilities"] or {}
            w.writerow([r["path"], r["class"] or "", r["probability"] if r["probability"] is not None else ""]
                       + [probs.get(c, "") for c in classes] + [r["error"] or ""])


def run_verb(args):
    from . import api

    if args.verb == "strategies":
        for name, summary in api.strategies().items():
            print(f"{name:<12} {summary}")
        return 0
    if args.verb == "backbones":
        print(f"{'name':<20}{'size':>5}  {'input':<7}{'weights from':<42}status")
        for name, size, pre, source, status in api.backbones():
            print(f"{name:<20}{size:>5}  {pre:<7}{source:<42}{status}")
        return 0
    if args.verb == "demo":
        api.demo(args.out, data=args.data, strategy=args.strategy, epochs=args.epochs,
                 image_size=args.image_size, verbose=1 if sys.stdout.isatty() else 2)
        return 0
    if args.verb == "scan":
        index, splits = api.scan(args.data, args.image_size, args.crop_to_aspect, args.split, args.seed)
        print(f"splits ({splits.origin}): " + ", ".join(f"{n} {len(ps)}" for n, ps in splits.items()))
        for d in splits.duplicates[:20]:
            print(f"duplicate ({d['kind']}): {' = '.join(d['files'])}")
        if args.write:
            from .runs import Run
            os.makedirs(args.write, exist_ok=True)
            Run(args.write).write_data_files(index, splits)
            print(f"wrote index.csv, rejects.csv, warnings.csv, duplicates.csv to {args.write}")
        return 0
    if args.verb == "train":
        verbose = 2 if args.quiet or not sys.stdout.isatty() else 1
        if args.resume:  # DATA, if given, is where the run's data folder is now
            run = api.resume(args.resume, epochs=args.epochs, verbose=verbose, data=args.data)
        elif not args.data:
            raise SmallvisionError("train needs a DATA folder (or --resume RUN); see smallvision train --help")
        else:
            run = api.train(args.data, args.strategy, out=args.out, epochs=args.epochs, batch_size=args.batch_size,
                            image_size=args.image_size, crop_to_aspect=args.crop_to_aspect, seed=args.seed,
                            learning_rate=args.learning_rate, patience=args.patience,
                            class_weight=args.class_weight, split=args.split, verbose=verbose,
                            backbone=args.backbone, head=args.head, weights=args.weights, start=args.start,
                            head_epochs=args.head_epochs)
        print(api.describe(run))
        return 0
    if args.verb == "ladder":
        out = api.ladder(args.data, out=args.out, strategies=args.strategies and args.strategies.split(","),
                         backbone=args.backbone, epochs_scale=args.epochs_scale, seeds=args.seeds,
                         image_size=args.image_size, batch_size=args.batch_size, split=args.split)
        print(api.summary_table(out))
        print(f"report: {os.path.join(out, 'report.html')} and report.md")
        return 0
    if args.verb == "report":
        r = api.report(args.path, args.out)
        print(f"wrote {r['html']} and {r['markdown']}")
        return 0
    if args.verb == "data":
        if args.what == "get":
            r = api.data_get(args.dataset, args.to, args.source, args.url, args.sha256, args.sizes)
            print(f"wrote {r['folder']}: " + ", ".join(f"{s} {sum(c.values())}" for s, c in r["counts"].items())
                  + f"; dropped {len(r['dropped'])} broken photos (see DROPPED.tsv)")
            for note in r["notes"]:
                print(f"note: {note}")
        elif args.what == "split":
            r = api.data_split(args.data, args.to, args.val, args.test, args.seed)
            print(f"wrote {r['folder']} ({' and '.join(r['placed_by'])}): "
                  + ", ".join(f"{s} {n}" for s, n in r["counts"].items()) + f"; {r['rejected']} rejected")
        elif args.what == "check":
            report, text = api.data_check(args.data, args.json)
            print(text)
            return 0 if report["usable"] else 1
        else:
            raise SmallvisionError("data what? get, split or check (see smallvision data --help)")
        return 0
    if args.verb == "explain":
        if args.what == "conv":
            text, _ = api.explain_conv(args.image, args.kernel, args.padding, args.stride, args.out)
        elif args.what == "model":
            text, _ = api.explain_model(args.target, args.image_size)
        elif args.what == "pooling":
            text, _ = api.explain_pooling(args.image_size, args.train, args.epochs, args.out)
        elif args.what == "activations":
            text, _ = api.explain_activations(args.run, args.image, args.out, args.per_layer)
        elif args.what == "heatmap":
            text, _ = api.explain_heatmap(args.run, args.image, args.out, args.class_name)
        else:
            raise SmallvisionError("explain what? conv, model, pooling, activations or heatmap "
                                   "(see smallvision explain --help)")
        print(text)
        return 0
    if args.verb == "predict":
        rows = api.predict(args.model, args.paths, batch_size=args.batch_size)
        if args.output:
            _write_rows(args.output, rows)
            print(f"wrote {len(rows)} predictions to {args.output}")
        else:
            for r in rows:
                print(f"{r['path']}\t{r['class']}\t{r['probability']:.4f}" if r["error"] is None
                      else f"{r['path']}\terror: {r['error']}")
        bad = sum(r["error"] is not None for r in rows)
        if bad:
            print(f"{bad} of {len(rows)} files could not be classified", file=sys.stderr)
        return 0
    return 2


def main(argv=None):
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # keep TensorFlow's start-up chatter out
    for stream in (sys.stdout, sys.stderr):  # file names that are not valid UTF-8 print as \xff
        if hasattr(stream, "reconfigure"):
            stream.reconfigure(errors="backslashreplace")
    parser = _parser()
    args = parser.parse_args(argv)
    if not args.verb:
        parser.print_help()
        return 2
    try:
        return run_verb(args)
    except SmallvisionError as e:
        print(f"smallvision: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("smallvision: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
