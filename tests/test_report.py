"""report.html: one self-contained page per run directory, checked as HTML and rendered by headless Chromium."""
import base64
import re
import shutil
import subprocess
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pandas as pd

from ldseg_suite import cli
from ldseg_suite.viz import gifs, plots, report

ROOT = Path(__file__).resolve().parents[1]
CONFIG = "# resolved from cfg/glas.ini\n[Run]\nMethod = ldseg\nMode = infer\nSeed = 0\n"
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"]
CHECK_SCRIPT = """<script>
window.addEventListener('load', () => {
  const imgs = Array.from(document.images);
  const ok = imgs.filter(i => i.complete && i.naturalWidth > 0).map(i => i.alt + ':' + i.naturalWidth);
  const el = document.createElement('pre'); el.id = 'img-check';
  el.textContent = JSON.stringify({total: imgs.length, loaded: ok}); document.body.appendChild(el);
});
</script>"""


def _fake_run(run_dir):
    """What an infer + sweep run leaves: config, tables, a summary, a plot, an overlay, a GIF, predictions."""
    run_dir.mkdir()
    (run_dir / "config.ini").write_text(CONFIG)
    table = pd.DataFrame({"case": ["a_1", "a_2", "a_3"], "dice": [0.8, 0.9, 0.7], "iou": [0.7, 0.8, 0.6]})
    mean = {"case": "mean", **table.drop(columns="case").mean().to_dict()}
    pd.concat([table, pd.DataFrame([mean])]).to_csv(run_dir / "metrics.csv", index=False, float_format="%.4f")
    pd.DataFrame({"method": ["ldseg", "unet", "otsu", "mean ldseg - unet"], "dice": [0.8, 0.78, 0.6, 0.02]}).to_csv(
        run_dir / "compare.csv", index=False)
    pd.DataFrame({"case": ["a_1", "b_1"], "split": ["test", "train"]}).to_csv(run_dir / "split.csv", index=False)
    (run_dir / "summary.md").write_text("| metric | value |\n|---|---|\n| dice | 0.8000 |\n")
    fig, ax = plots.plt.subplots(figsize=(3, 2))
    ax.plot([0, 0.1, 0.2], [0.9, 0.8, 0.5], color="tab:red", lw=3)
    plots.save_figure(fig, run_dir / "sweep.png")
    yy, xx = np.mgrid[:48, :48]
    overlay = np.zeros((48, 48, 3), np.uint8)
    overlay[..., 1] = 255 * ((yy - 24) ** 2 + (xx - 24) ** 2 < 200)
    (run_dir / "overlays").mkdir()
    iio.imwrite(run_dir / "overlays" / "a_1.png", overlay)
    frames = [np.full((32, 32, 3), 40 * k, np.uint8) for k in range(4)]
    gifs.write_gif(run_dir / "gifs" / "a_1.gif", frames)
    (run_dir / "predictions").mkdir()
    iio.imwrite(run_dir / "predictions" / "a_1.png", overlay)
    return run_dir


def _images(page: str):
    return re.findall(r'<img alt="([^"]+)"[^>]* src="([^"]+)"', page)


def test_page_holds_config_tables_mean_rows_summaries_and_embedded_images(tmp_path):
    run = _fake_run(tmp_path / "run")
    path = report.write_report(run, title="glas")
    assert path == run / "report.html"
    page = path.read_text()
    assert "<title>glas</title>" in page and "config cfg/glas.ini" in page
    assert re.search(r"<details><summary>Resolved config.*Method = ldseg", page, re.S)
    assert "<h3>metrics.csv</h3>" in page and "<h3>compare.csv</h3>" in page
    assert page.index("<h3>metrics.csv</h3>") < page.index("<h3>compare.csv</h3>")
    mean_rows = re.findall(r'<tr class="mean">\s*<td>([^<]*)</td>\s*<td>([^<]*)</td>', page)
    assert mean_rows == [("mean", "0.8000"), ("mean ldseg - unet", "0.02")]
    assert page.count("<tr>") == 3 + 3 + 2  # plain rows of metrics, compare, split (headers are styled)
    assert "<summary><code>split.csv</code></summary>" in page
    assert "| dice | 0.8000 |" in page
    images = _images(page)
    assert [alt for alt, _ in images] == ["sweep.png", "a_1.png", "a_1.gif"]  # predictions/ is not a picture
    for alt, src in images:
        assert src.startswith(("data:image/png;base64,", "data:image/gif;base64,")), alt
    assert base64.b64decode(images[2][1].split(",", 1)[1]) == (run / "gifs" / "a_1.gif").read_bytes()
    assert len(iio.imread(base64.b64decode(images[2][1].split(",", 1)[1]), extension=".gif", index=None)) == 4
    assert not re.search(r'(src|href)="(?!data:)', page)  # nothing to fetch
    assert "Not embedded" not in page


def test_caps_list_what_is_not_embedded(tmp_path, monkeypatch):
    run = _fake_run(tmp_path / "run")
    for k in range(3):
        iio.imwrite(run / "overlays" / f"b_{k}.png", np.zeros((8, 8, 3), np.uint8))
    limit = max(p.stat().st_size for p in (run / "sweep.png", run / "overlays" / "a_1.png", run / "gifs" / "a_1.gif"))
    (run / "gifs" / "big.gif").write_bytes((run / "gifs" / "a_1.gif").read_bytes() + b"\0" * limit)
    monkeypatch.setattr(report, "MAX_IMAGES", 3)
    monkeypatch.setattr(report, "MAX_IMAGE_BYTES", limit)
    page = report.write_report(run).read_text()
    assert [alt for alt, _ in _images(page)] == ["sweep.png", "a_1.png", "a_1.gif"]  # one of each group first
    skipped = re.findall(r"<li><code>([^<]+)</code>: ([^<]+)</li>", page)
    assert dict(skipped) == {"gifs/big.gif": "larger than the limit per image",
                             **{f"overlays/b_{k}.png": "more than 3 images" for k in range(3)}}
    assert "4 image(s) are in the run directory but not in this page" in page


def test_nothing_scored_writes_nothing(tmp_path):
    run = tmp_path / "train_only"
    (run / "checkpoints").mkdir(parents=True)
    (run / "config.ini").write_text(CONFIG)
    pd.DataFrame({"case": ["a"], "split": ["train"]}).to_csv(run / "split.csv", index=False)
    (run / "predictions").mkdir()
    iio.imwrite(run / "predictions" / "a.png", np.zeros((8, 8), np.uint8))
    assert report.write_report(run) is None
    assert not (run / "report.html").exists()


def test_cli_writes_the_report_after_a_run_and_a_report_failure_keeps_exit_code_0(tmp_path, monkeypatch, capsys):
    def fake_runner(cfg, mode, out, overwrite=False):
        out.mkdir(parents=True, exist_ok=True)
        cfg.write(out / "config.ini")
        pd.DataFrame({"case": ["x", "mean"], "dice": [0.5, 0.5]}).to_csv(out / "metrics.csv", index=False)
        return 0

    monkeypatch.setattr(cli.sections, "runner_for", lambda method: fake_runner)
    out = tmp_path / "run"
    assert cli.main(["--cfg", str(ROOT / "cfg" / "glas.ini"), "--mode", "infer", "--out", str(out)]) == 0
    assert f"report: {out / 'report.html'}" in capsys.readouterr().out
    assert "<h3>metrics.csv</h3>" in (out / "report.html").read_text()

    def broken(run_dir, title=None):
        raise OSError("disk full")

    monkeypatch.setattr(report, "write_report", broken)
    assert cli.main(["--cfg", str(ROOT / "cfg" / "glas.ini"), "--mode", "infer", "--out", str(out)]) == 0
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"warning: {out / 'report.html'} not written (OSError: disk full)"]


def _chromium():
    exe = shutil.which("chromium")
    assert exe, "headless Chromium is missing: apt-get install chromium (.ci/run installs it)"
    return exe


def test_report_renders_in_headless_chromium_with_every_image_loaded(tmp_path):
    exe = _chromium()
    run = _fake_run(tmp_path / "run")
    page = report.write_report(run, title="glas").read_text()
    checked = tmp_path / "checked.html"  # a copy with a script that records each image's natural width
    checked.write_text(page.replace("</body>", CHECK_SCRIPT + "</body>"))
    flags = [exe, *CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'profile'}"]
    dom = subprocess.run([*flags, "--virtual-time-budget=5000", "--dump-dom", checked.as_uri()],
                         capture_output=True, text=True, timeout=60)
    assert dom.returncode == 0, dom.stderr[-2000:]
    found = re.search(r'<pre id="img-check">\{"total":(\d+),"loaded":\[(.*?)\]\}</pre>', dom.stdout)
    assert found, dom.stdout[-2000:]
    loaded = re.findall(r'"([^"]+):(\d+)"', found.group(2))
    assert int(found.group(1)) == 3
    assert [name for name, _ in loaded] == ["sweep.png", "a_1.png", "a_1.gif"]
    assert all(int(w) > 0 for _, w in loaded) and dict(loaded)["a_1.png"] == "48"

    shot = tmp_path / "shot.png"
    proc = subprocess.run([*flags, "--window-size=1000,1600", "--hide-scrollbars", f"--screenshot={shot}",
                           (run / "report.html").as_uri()], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and shot.is_file(), proc.stderr[-2000:]
    pixels = iio.imread(shot)[..., :3].astype(int)
    assert pixels.shape[:2] == (1600, 1000)
    not_white = (pixels < 245).any(-1).mean()
    green = ((pixels[..., 1] > 200) & (pixels[..., 0] < 60) & (pixels[..., 2] < 60)).sum()  # the overlay's disc
    assert not_white > 0.02, not_white
    assert green > 2000, green  # the 48 px overlay shown at 192 px: a disc of about pi * 14^2 * 16 pixels
