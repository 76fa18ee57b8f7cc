"""The report as a list of blocks (headings, paragraphs, tables, pictures), written once and
rendered twice: Markdown with its pictures beside it, and one self-contained HTML file with
the pictures embedded (no network, no script)."""
import base64
import dataclasses
import datetime
import html
import os
import pathlib
import re

from ..plots import curves_png, grid_png, overlay_png
from ..progress import duration
from .collect import accuracy

# The page fits a 1280-pixel window (a browser test checks it with the widest table, refit columns
# included): a cell wraps only between its parts, never inside a figure ("99.43 %" and "± 0.12"
# keep together, see `_cell`); a table still wider than the page (many classes) scrolls inside its
# own box instead of pushing the page sideways.
CSS = """body{font-family:system-ui,sans-serif;max-width:1240px;margin:2em auto;padding:0 1em;color:#222}
.table{overflow-x:auto;max-width:100%}table{border-collapse:collapse;margin:1em 0;font-size:.85em}
th,td{border:1px solid #ccc;padding:.25em .4em;text-align:right}
th{background:#f3f3f3;vertical-align:bottom;font-weight:600}td:first-child,th:first-child{text-align:left}td:first-child{white-space:nowrap}
img{max-width:100%;margin:.5em 0}code{background:#f3f3f3;padding:0 .2em}.muted{color:#666}"""
_GLUED = re.compile(r"(?<=\d) (?=%|h\b|min\b|s\b)|(?<=±) ")  # "99.43 %", "1 h 23 min", "± 0.12"


def _cell(value):
    """A table cell's text, escaped, with no-break spaces inside each figure."""
    return _GLUED.sub("\u00a0", html.escape(str(value)))


def percent(ms):
    """(mean, std or None) of a fraction -> "97.1 % ± 0.3"."""
    mean, std = ms
    if mean is None:
        return "-"
    return f"{100 * mean:.1f} %" + (f" ± {100 * std:.1f}" if std is not None else "")


def _chapter_figure(strategy):
    """The chapter's test accuracy for ``strategy`` (its own hook), "" for one it does not have."""
    from .. import strategies
    try:
        return strategies.get(strategy).chapter_figure
    except ValueError:
        return ""


def _ints(values):
    return str(values[0]) if len(set(values)) == 1 else ", ".join(map(str, values))


def _params(row):
    if row["trainable"] is None:
        return "-"
    return f"{row['trainable']:,} / {row['total']:,}"


def _thumbnail(path, size=200):
    try:
        from PIL import Image
        with Image.open(path) as im:
            im = im.convert("RGB")
            im.thumbnail((size, size))
            import numpy as np
            return np.asarray(im)
    except Exception:
        return None


@dataclasses.dataclass(frozen=True)
class Heading:
    level: int  # 1, 2 or 3
    text: str


@dataclasses.dataclass(frozen=True)
class Paragraph:
    text: str
    href: str | None = None  # the whole paragraph links here
    link: str | None = None  # the linked words (default: the whole text)


@dataclasses.dataclass(frozen=True)
class Table:
    header: list
    rows: list  # of lists of cell texts
    id: str | None = None  # the HTML table's id (tests and the browser check find it)


@dataclasses.dataclass(frozen=True)
class Picture:
    name: str  # its file name beside report.md
    alt: str
    png: bytes


def blocks(report):
    """The report's content in order: :class:`Heading`, :class:`Paragraph`, :class:`Table` and
    :class:`Picture` blocks."""
    out = [Heading(1, report["title"]),
           Paragraph(f"Written {datetime.datetime.now():%Y-%m-%d %H:%M} from {report['path']}; "
                 f"data: {report['data']['data']}.")]
    if report["pending"]:
        out.append(Paragraph(f"Not finished yet (re-run the ladder to continue): {', '.join(report['pending'])}."))
    refit = any(r["refit"] for r in report["rows"])
    header = ["strategy", "backbone", "head", "trainable / total params", "image size", "seeds", "epochs",
              "best epoch", "validation accuracy"] + (["test accuracy (selection model)"] if refit else []) + \
        ["test accuracy", "test loss", "wall time", "images/s (training)", "chapter (2nd ed.)"]
    rows = [[r["strategy"], r["backbone"], r["head"], _params(r), "x".join(map(str, r["image_size"])), str(r["seeds"]),
             _ints(r["epochs"]), _ints(r["best_epochs"]), percent(r["val_accuracy"])]
            + ([percent(r["selection_test_accuracy"]) if r["refit"] else "-"] if refit else [])
            + [percent(r["test_accuracy"]) + (" (refit)" if r["refit"] else ""),
               "-" if r["test_loss"] is None else f"{r['test_loss']:.4f}", duration(r["wall_seconds"]),
               "-" if r["images_per_second"] is None else f"{r['images_per_second']:.1f}",
               _chapter_figure(r["strategy"])]
            for r in report["rows"]]
    out += [Heading(2, "Results"), Table(header, rows, "summary"),
            Paragraph("Accuracy: mean ± standard deviation over seeds; best epoch: lowest validation loss, whose "
                  "checkpoint is the run's model.keras and is what the test figures measure. Head: pooling, then "
                  "the chapter's Dense 256 + Dropout classifier or a linear one. Wall time: mean per run, "
                  "including decoding and feature extraction where the caches were cold.")]
    if refit:
        out.append(Paragraph("Refit: the epoch was chosen on validation by the selection model (its validation and "
                         "test figures), then the final model (model.keras; test accuracy marked \"refit\") was "
                         "trained on train + validation for that many epochs. Its validation figure would mean "
                         "nothing: it learnt from those images."))

    firsts = {strategy: group[0] for strategy, group in report["groups"].items()}
    if len(firsts) > 1:
        out += [Heading(2, "Validation accuracy across strategies"),
                Picture("overlay.png", "validation accuracy per epoch, one line per strategy",
                 overlay_png({f"{s} (seed {i['seed']})": i["history"] for s, i in firsts.items()}))]
    out.append(Heading(2, "Training curves"))
    for strategy, item in firsts.items():
        out += [Heading(3, f"{strategy} (seed {item['seed']})"),
                Picture(f"curves-{strategy}.png", f"{strategy}: training and validation loss and accuracy",
                 curves_png(item["history"], stages=item["metrics"].stages))]

    out.append(Heading(2, "Confusion matrices and per-class precision / recall (test)"))
    for strategy, item in firsts.items():
        m = item["metrics"].test
        if not m or not m.n:
            continue
        names = list(item["config"].class_names)
        out += [Heading(3, f"{strategy} (seed {item['seed']}): test accuracy {100 * m.accuracy:.1f} %"),
                Table(["true \\ predicted"] + names, [[n] + [str(v) for v in row]
                                                          for n, row in zip(names, m.confusion_matrix)], None),
                Table(["class", "precision", "recall", "F1", "images"],
                 [[n, f"{c['precision']:.3f}", f"{c['recall']:.3f}", f"{c['f1']:.3f}", str(c["support"])]
                  for n, c in m.per_class.items()], None)]

    best = report["best"]
    if report["confused"]:
        out += [Heading(2, f"Most-confused class pairs (test, {best['name']})"),
                Table(["true class", "predicted as", "test images", "share of the true class"],
                      [[t, p, str(k), f"{100 * share:.1f} %"] for t, p, k, share in report["confused"]], "confused")]
    if report["wrong"]:
        items = [(_thumbnail(r["file"]), f"{os.path.basename(r['path'])}\ntrue {r['true']}, predicted "
                  f"{r['predicted']}\np={r['probability']:.3f}, loss {r['loss']:.2f}") for r in report["wrong"]]
        out += [Heading(2, f"Test images the best model gets most wrong ({best['name']})"),
                Paragraph(f"The best run by validation accuracy is {best['name']}; these are its {len(items)} test "
                      "images with the highest loss (the lowest probability on the true class)."),
                Picture("most-wrong.png", "the test images with the highest loss", grid_png(items))]

    d = report["data"]
    order = ("train", "validation", "test", "all")
    audit = report.get("audit")
    if audit:
        counts = ", ".join(f"{n} {k}" for k, n in audit.get("counts", {}).items())
        audit_block = Paragraph(f"An audit of this data ({audit['written']}: {counts}) is at {audit['html']}: look at "
                                "its findings before trusting the figures.", href=pathlib.Path(audit["html"]).as_uri(),
                                link=audit["html"])
    else:
        audit_block = Paragraph(f"No audit of this data yet: smallvision audit {d['data']} looks for wrong labels, "
                                "near-copies across splits and photos of something else.")
    splits = sorted(d["counts"], key=lambda s: order.index(s) if s in order else len(order))
    out += [Heading(2, "Data"),
            Paragraph(f"{len(d['class_names'])} classes; splits {d['split_origin'] or 'made by smallvision'}."),
            audit_block,
            Table(["class"] + splits, [[n] + [str(d["counts"][s][i]) for s in splits]
                                           for i, n in enumerate(d["class_names"])], "counts")]
    if d["rejects"]:
        shown = d["rejects"][:50]
        out += [Paragraph(f"{len(d['rejects'])} files were not used" + (" (first 50 shown)" if len(d["rejects"]) > 50 else "")
                 + "; see rejects.csv in each run folder."),
                Table(["file", "why"], [[r["path"], r["reason"]] for r in shown], "rejects")]
    else:
        out.append(Paragraph("No file was rejected."))
    if d["duplicates"]:
        out += [Paragraph(f"{len(d['duplicates'])} groups of identical files span splits or classes (leakage):"),
                Table(["kind", "files", "splits", "classes"],
                 [[r["kind"], r["files"], r["splits"], r["classes"]] for r in d["duplicates"][:50]], "duplicates")]
    else:
        out.append(Paragraph("No identical files across splits or classes"
                    + (f" ({d['duplicates_within']} within a split)." if d["duplicates_within"] else ".")))
    out += [Heading(2, "Runs"),
            Table(["run", "strategy", "seed", "best epoch", "validation accuracy", "test accuracy", "wall time"],
             [[i["name"], i["strategy"], str(i["seed"]), str(i["metrics"].best_epoch),
               percent((accuracy(i["metrics"].validation), None)),
               percent((accuracy(i["metrics"].test), None)), duration(i["wall_seconds"])]
              for i in report["items"]], "runs")]
    return out


def _md_cell(text):
    return str(text).replace("|", "\\|").replace("\n", " ")


def markdown(content, assets):
    """Markdown text; pictures are referred to under the folder name ``assets``."""
    lines = []
    for block in content:
        if isinstance(block, Heading):
            lines += ["#" * block.level + " " + block.text, ""]
        elif isinstance(block, Paragraph):
            words = block.link or block.text
            lines += [block.text.replace(words, f"[{words}]({block.href})", 1) if block.href else block.text, ""]
        elif isinstance(block, Table):
            lines.append("| " + " | ".join(map(_md_cell, block.header)) + " |")
            lines.append("|" + "|".join("---" if i == 0 else "---:" for i in range(len(block.header))) + "|")
            lines += ["| " + " | ".join(map(_md_cell, row)) + " |" for row in block.rows]
            lines.append("")
        elif isinstance(block, Picture):
            lines += [f"![{block.alt}]({assets}/{block.name})", ""]
    return "\n".join(lines)


def html_page(content, title):
    """One self-contained HTML page: pictures as data: URIs, styles inline, no script."""
    e = html.escape
    parts = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
             f"<title>{e(title)}</title><style>{CSS}</style></head><body>"]
    for block in content:
        if isinstance(block, Heading):
            parts.append(f"<h{block.level}>{e(block.text)}</h{block.level}>")
        elif isinstance(block, Paragraph):
            words = block.link or block.text
            text = e(block.text).replace(e(words), f'<a href="{e(block.href)}">{e(words)}</a>', 1) if block.href \
                else e(block.text)
            parts.append(f"<p>{text}</p>")
        elif isinstance(block, Table):
            ident = f' id="{block.id}"' if block.id else ""
            parts.append(f'<div class="table"><table{ident}><thead><tr>'
                         + "".join(f"<th>{e(str(h))}</th>" for h in block.header) + "</tr></thead><tbody>")
            parts += ["<tr>" + "".join(f"<td>{_cell(c)}</td>" for c in row) + "</tr>" for row in block.rows]
            parts.append("</tbody></table></div>")
        elif isinstance(block, Picture):
            data = base64.b64encode(block.png).decode("ascii")
            parts.append(f'<img alt="{e(block.alt)}" src="data:image/png;base64,{data}">')
    parts.append("</body></html>")
    return "\n".join(parts)


def summary_table(report):
    """The strategy table of collected ``report`` contents as fixed-width text (for a terminal)."""
    rows = [("strategy", "backbone", "head", "seeds", "best epoch", "validation", "test")]
    for r in report["rows"]:
        test = percent(r["test_accuracy"])
        if r["refit"]:
            test = f"{test} refit (selection model: {percent(r['selection_test_accuracy'])})"
        rows.append((r["strategy"], r["backbone"], r["head"], str(r["seeds"]), ", ".join(map(str, r["best_epochs"])),
                     percent(r["val_accuracy"]), test))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in rows)
