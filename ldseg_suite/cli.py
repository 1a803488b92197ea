"""Argument parsing and dispatch for run.py. Exit codes: 0 ok, 2 bad input or config, 3 some cases of
``--mode predict`` failed (the others are written), 130 interrupted."""
from __future__ import annotations

import argparse
import contextlib
import inspect
import os
import sys
from pathlib import Path

from ldseg_suite import config, sections
from ldseg_suite.errors import LDSegError


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="run.py", description="Run a method of ldseg-suite from an .ini config.",
        epilog="exit codes: 0 success; 2 bad input or config (one line on stderr); 3 --mode predict finished but "
               "some cases failed (listed in predict.csv, the others are written); 130 interrupted")
    p.add_argument("--cfg", required=True, help="config file, e.g. cfg/glas.ini")
    p.add_argument("--mode", help="what to do (default: the config's [Run] Mode), e.g. train, infer, gif, sweep")
    p.add_argument("--out", help="run directory (default: outputs/<config name>)")
    p.add_argument("--input", metavar="PATH",
                   help="--mode predict: an image/volume or a folder of them to segment (no labels needed); "
                        "exit code 3 when some cases failed (listed in <out>/predict.csv)")
    p.add_argument("--shard", metavar="K/N",
                   help="--mode predict or infer: segment only cases K, K+N, K+2N, ... of the cohort (K = 0..N-1); "
                        "the last of the N shards to finish merges the tables (docs/scale-out.md)")
    p.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                   help="override a config value (repeatable)")
    p.add_argument("--resume", action="store_true", help="continue training from the run directory's checkpoint")
    p.add_argument("--overwrite", action="store_true", help="replace outputs that already exist in the run directory")
    p.add_argument("--debug", action="store_true", help="show the full traceback on errors")
    return p


def run(argv=None) -> int:
    args = build_parser().parse_args(argv)
    overrides = list(args.set) + (["Training.Resume=true"] if args.resume else [])
    cfg = config.load(args.cfg, sections.schema_for, overrides)
    mode = args.mode or cfg.Run.Mode
    out = Path(args.out) if args.out else Path("outputs") / Path(args.cfg).stem
    with _native_stderr_silenced(enabled=not args.debug):
        import tensorflow  # noqa: F401  (its C++ start-up chatter would bury our one-line errors)
    runner = sections.runner_for(cfg.Run.Method)
    if args.input is not None and mode != "predict":
        raise LDSegError(f"--input is only used by --mode predict (got --mode {mode})")
    extra = {"input_path": Path(args.input)} if mode == "predict" else {}
    if mode == "predict" and "input_path" not in inspect.signature(runner).parameters:
        raise LDSegError(f"--mode predict: method {cfg.Run.Method} does not segment new scans")
    if args.shard is not None:
        from ldseg_suite.inference import shard

        if mode not in ("predict", "infer") or "shard" not in inspect.signature(runner).parameters:
            raise LDSegError(f"--shard is used by --mode predict and infer (got --mode {mode} of method "
                             f"{cfg.Run.Method})")
        extra["shard"] = shard.parse_shard(args.shard)
    from ldseg_suite import distribute

    out = distribute.prepare(cfg, mode, out)  # before any TF op: GPU memory growth; multi-worker strategy and folder
    code = runner(cfg, mode, out, overwrite=args.overwrite, **extra) or 0
    from ldseg_suite.viz.report import report_after_run  # report.html whenever the run dir holds a table/plot/GIF

    report_after_run(out, Path(args.cfg).stem)
    distribute.finish(out)  # a non-chief worker's temporary folder
    return code


@contextlib.contextmanager
def _native_stderr_silenced(enabled: bool = True):
    """Send file descriptor 2 to /dev/null (C++ logging at TensorFlow import); Python errors still show."""
    if not enabled:
        yield
        return
    sys.stderr.flush()
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    debug = "--debug" in argv
    try:
        return run(argv)
    except LDSegError as exc:
        if debug:
            raise
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
