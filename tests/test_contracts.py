"""The typed contracts between the command line, the runner, the strategies and the run folder:
options parsed once, one training spec, records read by tolerant readers — and run folders
written before them still in use."""
import json
import os
import subprocess
import sys

import pytest

from smallvision import api, strategies
from smallvision.config import LadderRecord, Metrics, RunStatus
from smallvision.errors import SmallvisionError
from smallvision.runs import Run
from smallvision.strategies import TrainSpec
from smallvision.strategies.options import CLASSIFIERS, HEADS, FinetuneOptions, PretrainedOptions


def test_options_are_parsed_once_checked_and_complete():
    spec = TrainSpec.parse("features", classifier="linear", epochs=2)
    assert spec.options == PretrainedOptions("efficientnet_lite0", "gap", "linear", "imagenet")
    assert spec.learning_rate == 1e-2 and spec.image_size == (224, 224)  # defaults that follow the options
    assert spec.with_(classifier="chapter").options.classifier == "chapter"
    assert spec.with_(seed=3).options is spec.options and spec.with_(seed=3).seed == 3
    with pytest.raises(SmallvisionError, match=r"strategy scratch takes no --backbone \(it is for: features, "
                                               r"features-augment, finetune\)"):
        TrainSpec.parse("scratch", backbone="vgg16")
    with pytest.raises(SmallvisionError, match=r"strategy features takes no --from \(it is for: finetune\)"):
        TrainSpec.parse("features", start="runs/x")
    with pytest.raises(SmallvisionError, match="unknown training setting 'epoch'"):
        TrainSpec.parse("scratch", epoch=3)
    with pytest.raises(SmallvisionError, match="head must be one of"):
        TrainSpec.parse("features", head="max")
    with pytest.raises(SmallvisionError, match="views must be a whole number"):
        TrainSpec.parse("features-augment", views="2.5")
    with pytest.raises(SmallvisionError, match="--classifier is the start run's"):
        TrainSpec.parse("finetune", start="runs/x", classifier="linear", image_size=64)
    ft = TrainSpec.parse("finetune", start="runs/x", image_size=64).options
    assert ft.backbone is None and ft.start == os.path.abspath("runs/x")  # the start run's base, recorded absolute
    assert FinetuneOptions.from_json(ft.to_json()) == ft


def test_what_an_older_run_recorded_reads_with_the_defaults_of_its_time():
    features = strategies.get("features")
    # recorded before the classifier option existed: the chapter's head, whatever the default now
    assert features.read_options({}) == PretrainedOptions("efficientnet_lite0", "gap", "chapter", "imagenet")
    assert features.read_options({"backbone": "vgg16", "unknown": 1}).head == "flatten"  # the backbone's own
    assert strategies.get("finetune").read_options({"head_epochs": 2}).head_epochs == 2
    assert RunStatus.from_json({"status": "finished", "later_key": 1}).is_finished
    m = Metrics.from_json({"best_epoch": 2, "epochs_done": 3, "test": {"n": 4, "accuracy": 0.5, "loss": 0.7}})
    assert m.chosen.test.accuracy == 0.5 and m.validation is None and m["test"]["n"] == 4  # the dict still reads
    old = LadderRecord.from_json({"data": "/d", "image_size": [80, 80], "backbone": "efficientnet_lite0",
                                  "epochs_scale": 1.0, "batch_size": 32, "split": "0.7,0.15,0.15",
                                  "patience": None, "runs": ["scratch-seed0"]})
    assert old.classifier is None and old.refit is False and old.runs == ("scratch-seed0",)


@pytest.mark.slow  # default tier under 5 minutes: CI's extended tier runs it
def test_old_run_folders_still_resume_report_predict_and_export(tiny_data, tmp_path):
    """A run written today, its JSON rewritten into the shape the code before the typed contracts
    wrote (options: only those given, no classifier from before that option; run.json and
    metrics.json as they were), in a ladder folder of that time: it resumes, reports, predicts
    and exports."""
    run = api.train(tiny_data, "features", out=tmp_path / "L" / "runs", epochs=1, image_size=64,
                    split="0.5,0.25,0.25", verbose=0, progress=False)
    config = json.load(open(run.file("config.json"), encoding="utf-8"))
    config["options"] = {}  # what a run recorded before the classifier option existed
    json.dump(config, open(run.file("config.json"), "w", encoding="utf-8"))
    name = os.path.basename(run.path)
    json.dump({"data": str(tiny_data), "image_size": [64, 64], "backbone": "efficientnet_lite0", "epochs_scale": 1.0,
               "batch_size": 32, "split": "0.5,0.25,0.25", "patience": None, "runs": [name]},
              open(tmp_path / "L" / "ladder.json", "w", encoding="utf-8"))  # before classifier and refit existed
    resumed = api.resume(run.path, epochs=2, verbose=0, progress=False)
    assert resumed.status.is_finished and resumed.metrics.epochs_done == 2
    assert strategies.get("features").read_options(resumed.config.options).classifier == "chapter"
    api.report(str(tmp_path / "L"))
    report = open(tmp_path / "L" / "report.md", encoding="utf-8").read()
    assert "| features | efficientnet_lite0 | gap, chapter |" in report and "≈97 %" in report
    rows = api.predict(run.path, [tiny_data / "bars"], progress=False)
    assert len(rows) == 16 and all(r["error"] is None for r in rows)
    result = api.export(run.path, format="onnx", out=tmp_path / "onnx", check_images=8, progress=False)
    assert result.differing == 0
    labels = json.load(open(tmp_path / "onnx" / "labels.json", encoding="utf-8"))
    assert labels["class_names"] == list(run.config.class_names) and labels["input"]["height"] == 64
    assert api.predict(str(tmp_path / "onnx"), [tiny_data / "bars"], progress=False)[0]["class"] == rows[0]["class"]
    assert Run(run.path).status.wall_seconds > 0


def test_the_command_line_takes_its_choices_from_the_registries_without_keras():
    """The parser lists strategies, heads, classifiers, formats and runtimes from where they are
    declared, and building it imports no Keras (nor TensorFlow)."""
    code = ("import sys\nfrom smallvision import cli\np = cli.parser()\n"
            "assert 'keras' not in sys.modules and 'tensorflow' not in sys.modules, 'Keras imported'\n"
            "train = p._subparsers._group_actions[0].choices['train']\n"
            "acts = {a.dest: a for a in train._actions}\n"
            "print(list(acts['head'].choices), list(acts['classifier'].choices), acts['epochs'].help)\n"
            "export = p._subparsers._group_actions[0].choices['export']\n"
            "print(list({a.dest: a for a in export._actions}['format'].choices))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    first, formats = out.stdout.strip().splitlines()
    assert first.startswith(f"{list(HEADS)} {list(CLASSIFIERS)} default: the strategy's (scratch 30, augment 100, "
                            "features 20, features-augment 50, finetune 30)")
    from smallvision.runtime import FORMATS
    assert formats == str(list(FORMATS))
