"""The ladder: every strategy on the same data, resumed after an interruption, and its report
(Markdown + one self-contained HTML page, opened in a real headless browser)."""
import os
import re

import pytest

from smallvision import api, cli, ladder, strategies
from smallvision.errors import SmallvisionError
from smallvision.runs import Run
from conftest import headless_chromium, make_folder

STRATEGIES = ["scratch", "features", "finetune"]
SHORT = dict(strategies=STRATEGIES, epochs_scale=0.05, image_size=80, split="0.5,0.25,0.25",
             seeds="features=2", progress=False)


@pytest.fixture(scope="module")
def finished_ladder(tmp_path_factory):
    """A short ladder that was interrupted in its third run and then re-run to the end."""
    root = tmp_path_factory.mktemp("ladder")
    data = make_folder(root / "data", per_class=16)
    out = root / "L"
    from smallvision import runtime
    from smallvision import fitting
    real_fit, real_frozen = fitting.fit, runtime.frozen_runner
    calls, frozen = [], []

    def fit_then_stop(*args, **kwargs):  # the 3rd run (features, seed 1) is interrupted (Ctrl-C)
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real_fit(*args, **kwargs)

    with pytest.MonkeyPatch.context() as mp:  # module scope: set up before the per-test cache
        mp.setenv("SMALLVISION_CACHE", str(root / "cache"))
        mp.setattr(fitting, "fit", fit_then_stop)
        mp.setattr(runtime, "frozen_runner", lambda model, key, **kw: frozen.append(key) or real_frozen(model, key, **kw))
        with pytest.raises(SmallvisionError, match="interrupted; continue with"):
            api.ladder(str(data), out=str(out), **SHORT)
    assert Run(out / "runs" / "features-seed1").status.status == "interrupted"
    kept = {name: os.stat(out / "runs" / name / "model.keras").st_mtime_ns for name in ("scratch-seed0", "features-seed0")}
    assert not (out / "report.html").exists()
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SMALLVISION_CACHE", str(root / "cache"))
        api.ladder(str(data), out=str(out), **SHORT)  # the same command again
    return dict(data=data, out=out, kept=kept, frozen=frozen)


def test_an_interrupted_ladder_continues_and_keeps_finished_runs(finished_ladder):
    out = finished_ladder["out"]
    runs = sorted(os.listdir(out / "runs"))
    assert runs == ["features-seed0", "features-seed1", "finetune-seed0", "scratch-seed0"]
    for name, mtime in finished_ladder["kept"].items():  # not trained again
        assert os.stat(out / "runs" / name / "model.keras").st_mtime_ns == mtime
    for name in runs:
        run = Run(out / "runs" / name)
        assert run.status.status == "finished" and run.config.image_size == (80, 80)
        assert run.config.split == (0.5, 0.25, 0.25)
    # finetune started from... no features-augment in this ladder: it trained its own head first
    ft = Run(out / "runs" / "finetune-seed0")
    assert ft.config.options["head_epochs"] == 2 and ft.metrics["stages"] == {"head": 1, "finetune": 3}
    assert Run(out / "runs" / "features-seed1").config.seed == 1
    # one frozen pass, up front, filled what features and finetune read: the clean images, the views
    assert len(finished_ladder["frozen"]) == 2
    assert all("-lower-block14_add+gap-" in key for key in finished_ladder["frozen"])
    # every run saw the same data and splits
    assert len({Run(out / "runs" / n).config.data_index_sha256 for n in runs}) == 1


def test_ladder_refuses_other_settings_in_the_same_folder(finished_ladder):
    with pytest.raises(SmallvisionError, match="made with image_size=.80, 80., not .96, 96.; use another --out"):
        api.ladder(str(finished_ladder["data"]), out=str(finished_ladder["out"]), **dict(SHORT, image_size=96))


def test_report_table_and_markdown(finished_ladder):
    out = finished_ladder["out"]
    md = (out / "report.md").read_text()
    rows = [line for line in md.splitlines() if line.startswith("| ") and "efficientnet_lite0" in line]
    assert len(rows) == 2  # features and finetune
    features = next(r for r in rows if r.startswith("| features |"))
    assert re.search(r"\| 2 \| 1 \|", features)  # 2 seeds, 1 epoch
    assert re.search(r"\d+\.\d % ± \d+\.\d", features)  # mean ± std over the two seeds
    for name in re.findall(r"\]\((report_files/[^)]+)\)", md):
        with open(out / name, "rb") as f:
            assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    assert "most wrong" in md and "No file was rejected." in md
    table = api.summary_table(str(out))
    assert table.splitlines()[0].split()[:2] == ["strategy", "backbone"] and len(table.splitlines()) == 4


def test_report_of_a_single_run(finished_ladder, tmp_path):
    r = api.report(finished_ladder["out"] / "runs" / "scratch-seed0", tmp_path / "rep")
    html = open(r["html"], encoding="utf-8").read()
    assert html.count("<img ") == 2  # curves + most wrong; no overlay for one strategy
    assert 'id="summary"' in html and "http://" not in html and "https://" not in html
    with pytest.raises(SmallvisionError, match="not a ladder folder"):
        api.report(tmp_path)


@pytest.mark.slow
def test_html_report_renders_in_a_real_browser(finished_ladder, tmp_path):
    browser = headless_chromium()
    try:
        browser.get((finished_ladder["out"] / "report.html").as_uri())
        images = browser.execute_script(
            "return Array.from(document.images).map(i => [i.alt, i.complete, i.naturalWidth, i.naturalHeight])")
        assert len(images) == 1 + 3 + 1  # overlay, one curve per strategy, most-wrong grid
        for alt, complete, width, height in images:
            assert complete and width > 100 and height > 100, alt  # decoded, not a broken-image icon
        rows = browser.execute_script(
            "return Array.from(document.querySelectorAll('#summary tbody tr')).map(r => r.cells[0].textContent)")
        assert rows == STRATEGIES
        header = browser.execute_script("return document.querySelector('#summary thead').textContent")
        assert "test accuracy" in header and "trainable / total params" in header
        assert browser.title.startswith("smallvision ladder on data")
        assert_fits_the_window(browser)
        # the widest results table a report makes (refit's extra column, three seeds, long figures)
        from smallvision.report.render import Heading, Table, html_page
        header = ["strategy", "backbone", "head", "trainable / total params", "image size", "seeds", "epochs",
                  "best epoch", "validation accuracy", "test accuracy (selection model)", "test accuracy",
                  "test loss", "wall time", "images/s (training)", "chapter (2nd ed.)"]
        row = ["features-augment", "efficientnet_lite2", "gap, linear", "1,337,985 / 3,741,217", "260x260", "3",
               "100, 100, 100", "12, 37, 100", "99.43 % ± 0.12", "99.52 % ± 0.06", "99.63 % ± 0.03 (refit)",
               "0.0123", "1 h 23 min", "1234.5", "97.5 %"]
        page = tmp_path / "wide.html"
        page.write_text(html_page([Heading(1, "wide"), Table(header, [row] * 5, "summary")], "wide"), encoding="utf-8")
        browser.get(page.as_uri())
        assert_fits_the_window(browser)
    finally:
        browser.quit()


def assert_fits_the_window(browser):
    """In a 1280-pixel window the page does not scroll sideways and no column of the results
    table is cut."""
    browser.set_window_size(1280, 900)
    inner = browser.execute_script("return window.innerWidth")
    assert inner >= 1200, inner
    page, view, right, table, box = browser.execute_script(
        "const t = document.querySelector('#summary'); return [document.documentElement.scrollWidth, "
        "document.documentElement.clientWidth, t.getBoundingClientRect().right, t.scrollWidth, "
        "t.parentElement.clientWidth]")
    assert page <= view and right <= view and table <= box, (page, view, right, table, box)


def test_ladder_command_line(tmp_path, capsys):
    data = make_folder(tmp_path / "data", per_class=12)
    out = tmp_path / "L"
    assert cli.main(["ladder", str(data), "--strategies", "scratch", "--epochs-scale", "0.04", "--image-size", "80",
                     "--out", str(out), "--quiet", "--patience", "5"]) == 0
    printed = capsys.readouterr()
    assert printed.out.splitlines()[0].split()[0] == "strategy" and "scratch" in printed.out
    assert "ladder 1/1: scratch, seed 0" in printed.err
    assert (out / "report.html").is_file()
    assert Run(out / "runs" / "scratch-seed0").config.patience == 5  # every run stops early alike
    with pytest.raises(SmallvisionError, match="ladder was made with patience=5, not None"):
        api.ladder(str(data), out=str(out), strategies=["scratch"], epochs_scale=0.04, image_size=80, progress=False)
    with pytest.raises(SmallvisionError, match="patience must be a positive integer. Received: patience=0"):
        api.ladder(str(data), out=str(tmp_path / "L2"), strategies=["scratch"], patience=0, progress=False)
    assert cli.main(["ladder", str(data), "--strategies", "magic"]) == 2
    assert capsys.readouterr().err.strip().splitlines()[-1].startswith("smallvision: error: unknown strategy")


def test_seeds_and_plan():
    assert ladder.parse_seeds("3", ["scratch", "features"]) == {"scratch": 3, "features": 3}
    assert ladder.parse_seeds("features=3", ["scratch", "features"]) == {"scratch": 1, "features": 3}
    with pytest.raises(SmallvisionError, match="seeds must be"):
        ladder.parse_seeds("features=x", ["features"])
    plan = ladder.plan(list(ladder.LADDER), {s: 1 for s in ladder.LADDER}, 0.1).entries
    assert [(p.name, p.epochs) for p in plan] == [("scratch-seed0", 3), ("augment-seed0", 10),
                                                  ("features-seed0", 2), ("features-augment-seed0", 5),
                                                  ("finetune-seed0", 3)]
    # finetune fine-tunes the features-augment run of the same seed; without one it trains a head first
    assert plan[-1].options.start == os.path.abspath(os.path.join("runs", "features-augment-seed0"))
    alone = ladder.plan(["features", "finetune"], {"features": 1, "finetune": 1}, 0.1).entries
    assert alone[-1].options.start is None and alone[-1].options.head_epochs == 5


@pytest.mark.realdata
def test_short_ladder_on_real_photos(shared_subset, tmp_path):
    """All five strategies on 80 photos of the shared set (24/8/8 per class), a few epochs each."""
    out = api.ladder(str(shared_subset), out=str(tmp_path / "L"), epochs_scale=0.04, image_size=80, progress=False)
    report = open(os.path.join(out, "report.md"), encoding="utf-8").read()
    for strategy in ladder.LADDER:
        assert f"| {strategy} |" in report
    ft = Run(os.path.join(out, "runs", "finetune-seed0"))
    assert strategies.get("finetune").read_options(ft.config.options).start.endswith("features-augment-seed0")
    assert "| class | train | validation | test |" in report and "| cats | 24 | 8 | 8 |" in report
