"""One self-contained ``report.html`` per run directory: the resolved config, every table and summary, the plots,
overlays and GIFs of the run, images embedded as base64 data URIs (the page loads no other file).

``write_report(run_dir)`` is called by the CLI after every run (``report_after_run``); it writes nothing when the
run directory holds nothing scored (no table, plot or GIF).
"""
from __future__ import annotations

import base64
import datetime
import html
import io
import os
import struct
import sys
from pathlib import Path

import pandas as pd

MAX_IMAGES = 24  # embedded images at most, shared fairly between plots, overlays and GIFs
MAX_IMAGE_BYTES = 5 * 2**20  # larger files are listed, not embedded
MAX_TOTAL_BYTES = 40 * 2**20  # budget of all embedded images together
MAX_ROWS = 200  # table rows shown (mean rows always are)
SKIP_DIRS = {"predictions", "checkpoints", "logs"}  # per-case outputs and bookkeeping, not pictures of results
BOOKKEEPING = {"split.csv"}  # tables shown collapsed; they do not make a run "scored"
MIME = {".png": "image/png", ".gif": "image/gif"}

CSS = """
body{font-family:system-ui,-apple-system,'Segoe UI',Roboto,sans-serif;margin:24px auto;max-width:1200px;
 padding:0 16px;color:#1b1f24;background:#fff}
h1{font-size:1.6em;margin-bottom:0}h2{border-bottom:1px solid #d0d7de;padding-bottom:4px;margin-top:32px}
.sub{color:#57606a;margin-top:4px}
table{border-collapse:collapse;font-size:13px;margin:8px 0 16px;font-variant-numeric:tabular-nums}
th,td{border:1px solid #d0d7de;padding:3px 8px;text-align:right}th{background:#f6f8fa}
td:first-child,th:first-child{text-align:left}
tr.mean td{background:#fff8c5;font-weight:600}
pre{background:#f6f8fa;padding:10px;overflow-x:auto;font-size:12px}
.grid{display:flex;flex-wrap:wrap;gap:16px}
figure{margin:0;border:1px solid #d0d7de;padding:8px;background:#fafbfc}
figure img{display:block;max-width:100%;height:auto;image-rendering:pixelated}
figcaption{font-size:12px;color:#57606a;margin-top:4px;word-break:break-all}
.note{color:#9a6700;font-size:13px}
"""


def write_report(run_dir: Path, title: str | None = None) -> Path | None:
    """Write ``run_dir/report.html`` and return its path, or return None (writing nothing) when nothing is scored."""
    run_dir = Path(run_dir)
    tables = sorted(run_dir.glob("*.csv"), key=_table_order)
    scored = [t for t in tables if t.name not in BOOKKEEPING]
    groups = _image_groups(run_dir)
    if not scored and not any(groups.values()):
        return None
    title = title or run_dir.resolve().name
    parts = [f"<h1>{_e(title)}</h1>", f'<p class="sub">{_e(_subtitle(run_dir))}</p>']

    config = run_dir / "config.ini"
    if config.is_file():
        parts.append("<details><summary>Resolved config (<code>config.ini</code>)</summary>"
                     f"<pre>{_e(config.read_text(errors='replace'))}</pre></details>")
    for t in tables:
        if t.name in BOOKKEEPING:
            parts.append(f"<details><summary><code>{_e(t.name)}</code></summary>{_table_html(t, heading=False)}"
                         "</details>")
    if scored:
        parts.append("<h2>Tables</h2>")
        parts += [_table_html(t) for t in scored]
    summaries = sorted(run_dir.glob("*.md"))
    if summaries:
        parts.append("<h2>Summaries</h2>")
        parts += [f"<h3>{_e(s.name)}</h3><pre>{_e(s.read_text(errors='replace'))}</pre>" for s in summaries]

    chosen, skipped = _choose_images(run_dir, groups)
    for group, label in (("plots", "Plots"), ("overlays", "Overlays"), ("gifs", "GIFs")):
        figures = [_figure(run_dir, p) for p in chosen if p in groups[group]]
        if figures:
            parts.append(f"<h2>{label}</h2><div class=\"grid\">{''.join(figures)}</div>")
    if skipped:
        items = "".join(f"<li><code>{_e(str(p.relative_to(run_dir)))}</code>: {_e(why)}</li>" for p, why in skipped)
        parts.append(f'<h2>Not embedded</h2><p class="note">{len(skipped)} image(s) are in the run directory but '
                     f"not in this page (at most {MAX_IMAGES} images, {_mb(MAX_IMAGE_BYTES)} each, "
                     f"{_mb(MAX_TOTAL_BYTES)} in all):</p><ul>{items}</ul>")

    page = ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\"><title>{_e(title)}</title>"
            f"<style>{CSS}</style></head><body>\n" + "\n".join(parts) + "\n</body></html>\n")
    out = run_dir / "report.html"
    tmp = run_dir / f".tmp_report_{os.getpid()}.html"  # shards of one run may write at the same time
    tmp.write_text(page, encoding="utf-8")
    os.replace(tmp, out)
    return out


def report_after_run(run_dir: Path, title: str | None = None) -> Path | None:
    """The CLI's hook: write the report, print ``report: <path>``; a failure only prints a warning."""
    try:
        path = write_report(run_dir, title)
    except Exception as exc:  # the run itself succeeded: never turn that into an error
        print(f"warning: {Path(run_dir) / 'report.html'} not written ({exc.__class__.__name__}: {exc})",
              file=sys.stderr)
        return None
    if path is not None:
        print(f"report: {path}", flush=True)
    return path


def _mb(n: int) -> str:
    return f"{n / 2**20:.3g} MB"


def _e(text) -> str:
    return html.escape(str(text))


def _subtitle(run_dir: Path) -> str:
    source = ""
    config = run_dir / "config.ini"
    if config.is_file():
        first = config.read_text(errors="replace").splitlines()[:1]
        if first and first[0].startswith("# resolved from "):
            source = f"config {first[0].removeprefix('# resolved from ')}, "
    stamp = datetime.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")
    return f"{source}run directory {run_dir}, report written {stamp}"


def _table_order(path: Path):
    first = ("metrics.csv", "compare.csv", "evaluate.csv")
    return (first.index(path.name) if path.name in first else len(first), path.name)


def _is_mean_row(row) -> bool:
    return any(str(v).strip().lower().startswith("mean") for v in row)


def _table_html(path: Path, heading: bool = True) -> str:
    head = f"<h3>{_e(path.name)}</h3>" if heading else ""
    try:  # the text exactly as written (the runners already round), no NaN guessing
        frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        return f'{head}<p class="note">not a readable table ({_e(exc.__class__.__name__)})</p>'
    mean = [_is_mean_row(r) for r in frame.itertuples(index=False)]
    note = ""
    if len(frame) > MAX_ROWS:
        keep = [i < MAX_ROWS or m for i, m in enumerate(mean)]
        note = f'<p class="note">{len(frame) - sum(keep)} more rows in {_e(path.name)}</p>'
        frame = frame[keep]
        mean = [m for m, k in zip(mean, keep) if k]
    header, tbody = frame.to_html(index=False, border=0, escape=True).split("<tbody>", 1)
    rows = tbody.split("<tr>")  # cells are escaped: every "<tr>" starts one row of the frame, in order
    tbody = rows[0] + "".join(('<tr class="mean">' if m else "<tr>") + r for m, r in zip(mean, rows[1:]))
    return f"{head}{header}<tbody>{tbody}{note}"


def _image_groups(run_dir: Path) -> dict[str, list[Path]]:
    groups: dict[str, list[Path]] = {"plots": [], "overlays": [], "gifs": []}
    for path in sorted(run_dir.rglob("*")):
        rel = path.relative_to(run_dir)
        if path.suffix.lower() not in MIME or not path.is_file() or rel.name.startswith(".tmp"):
            continue
        if any(part in SKIP_DIRS or part.startswith(".") for part in rel.parts[:-1]):
            continue
        if path.suffix.lower() == ".gif":
            groups["gifs"].append(path)
        else:
            groups["plots" if len(rel.parts) == 1 else "overlays"].append(path)
    return groups


def _choose_images(run_dir: Path, groups: dict[str, list[Path]]):
    """Round-robin over the groups so that many overlays do not crowd out the plots and GIFs."""
    chosen, skipped, total = [], [], 0
    queues = [list(g) for g in groups.values()]
    while any(queues):
        for queue in queues:
            if not queue:
                continue
            path = queue.pop(0)
            size = path.stat().st_size
            if size > MAX_IMAGE_BYTES:
                skipped.append((path, "larger than the limit per image"))
            elif len(chosen) >= MAX_IMAGES:
                skipped.append((path, f"more than {MAX_IMAGES} images"))
            elif total + size > MAX_TOTAL_BYTES:
                skipped.append((path, "the page's image budget is used up"))
            else:
                chosen.append(path)
                total += size
    return chosen, sorted(skipped)


def _natural_width(data: bytes, suffix: str) -> int | None:
    if suffix == ".png" and data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) >= 24:
        return struct.unpack(">I", data[16:20])[0]
    if suffix == ".gif" and data[:4] == b"GIF8" and len(data) >= 10:
        return struct.unpack("<H", data[6:8])[0]
    return None


def _figure(run_dir: Path, path: Path) -> str:
    data = path.read_bytes()
    suffix = path.suffix.lower()
    width = _natural_width(data, suffix)
    # Small images (64 px masks, 32 px volumes' slices) are shown enlarged, pixelated.
    size = f' width="{min(4 * width, 256)}"' if width and width < 256 else ""
    buf = io.StringIO()
    buf.write(f'<figure><img alt="{_e(path.name)}"{size} src="data:{MIME[suffix]};base64,')
    buf.write(base64.b64encode(data).decode("ascii"))
    buf.write(f'"><figcaption>{_e(str(path.relative_to(run_dir)))}</figcaption></figure>')
    return buf.getvalue()
