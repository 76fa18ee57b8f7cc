"""Reports: ``collect`` reads a ladder or run folder, ``render`` writes it as Markdown and as
one self-contained HTML page, ``plots`` draws the pictures."""
import os

from .._io import write_bytes_atomic, write_text_atomic


def write_report(path, out=None):
    """Write ``report.md`` (+ ``report_files/*.png``) and ``report.html`` for a ladder or run folder.

    Returns:
        {"markdown": path, "html": path, "report": the collected contents}.
    """
    from .collect import collect
    from .render import Picture, blocks, html_page, markdown

    report = collect(path)
    out = os.fspath(out or path)
    content = blocks(report)
    assets = "report_files"
    for block in content:
        if isinstance(block, Picture):
            write_bytes_atomic(os.path.join(out, assets, block.name), block.png)
    md, page = os.path.join(out, "report.md"), os.path.join(out, "report.html")
    write_text_atomic(md, markdown(content, assets))
    write_text_atomic(page, html_page(content, report["title"]))
    return {"markdown": md, "html": page, "report": report}


def summary_table(path):
    """The ladder's (or run's) strategy table as fixed-width text."""
    from .collect import collect
    from .render import summary_table as table
    return table(collect(path))
