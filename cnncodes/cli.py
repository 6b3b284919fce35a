#!/usr/bin/env python
"""cnncodes command line: extract CNN codes once, then fit, compare and predict on them.

Argument parsing and printing only: each command calls the function a notebook calls (cnncodes/api/, one module a verb),
with its options defined once in cnncodes/_cli_options.py.
"""
import functools
import json
import os
import re
import signal
import sys


class Terminated(KeyboardInterrupt):
    """SIGTERM, handled like Ctrl-C: commit what is complete, then exit 143."""


def _terminate(signum, frame):
    raise Terminated()


def cmd_extract(args):
    from .api.extract import extract_and_index
    from .extract import ExtractConfig
    from .extract.config import FROM_THE_CACHE, CodeSpec, RunOptions
    given = {name for name in FROM_THE_CACHE if getattr(args, name, None) is not None}  # the rest: the cache's
    config = ExtractConfig(args.data, args.cache, codes=CodeSpec.from_args(args), run=RunOptions.from_args(args),
                           given=given)
    summary = extract_and_index(config)
    for path, reason in summary.failures[:20]:
        print(f"failed: {path}: {reason}", file=sys.stderr)
    if len(summary.failures) > 20:
        print(f"... and {len(summary.failures) - 20} more (see `cnncodes info {args.cache}`)", file=sys.stderr)
    print(json.dumps(summary.to_dict(), indent=2) if args.json else in_flags(summary.line()))
    if summary.interrupted:
        return 143 if isinstance(summary.interrupted, Terminated) else 130
    return 0


def cmd_rank(args):
    from .api.rank import rank_backbones
    say = (lambda text: None) if args.json else (lambda text: print(f"note: {text}", file=sys.stderr))

    def on_row(row):
        if not args.json:
            print(f"{row.candidate}: " + (f"failed: {row.failed}" if row.failed else
                  f"probe {row.probe_accuracy:.4f}, LogME {row.logme:.3f}, extract {row.extract_seconds:.1f} s, "
                  f"scores {row.score_seconds:.1f} s"), file=sys.stderr)
    options = {k: getattr(args, k) for k in ("crop_size", "batch_size", "workers") if getattr(args, k) is not None}
    ranking = rank_backbones(args.data, args.backbones, sample=args.sample, caches=args.caches, seed=args.seed,
                             progress=args.progress, on_note=say, on_row=on_row, device=args.device, **options)
    plot = ranking.plot(os.path.join(args.caches, "rank.png"))
    if args.json:
        print(json.dumps(ranking.to_dict(), indent=2))
        return 0
    print(f"\n{ranking.sample} photos of {args.data} ({', '.join(f'{c} {n}' for c, n in ranking.per_class.items())}); "
          f"machine: {ranking.machine}")
    print(ranking.table())
    print("probe: the logreg recipe out of fold (5 folds, every photo scored once), Wilson 95% CI; vs best: McNemar "
          "on the same photos, '~' = not distinguishable (p >= 0.05); k-NN: cosine, k=10, same folds; LogME: "
          "evidence per photo, higher is better; front: no other candidate is as accurate and as fast. The probe "
          f"trains on 4/5 of the sample: it ranks the candidates, and a fit on all your photos scores higher")
    print(f"plot: {plot}; JSON: {os.path.join(args.caches, 'rank.json')}")
    if ranking.next_command:
        print(f"next (extracts only the photos outside the sample): {ranking.next_command}")
    return 0


def cmd_similar(args):
    from .api.similar import similar
    results = similar(args.cache, args.queries, k=args.k, text=args.text, layer=args.layer,
                      max_memory=args.max_memory, weights=args.weights, device=args.device, exact=args.exact,
                      check_recall=args.check_recall)
    if args.sheet and len(results):
        results.write_sheet(args.sheet)
    if args.json:
        print(json.dumps(results.to_dict(), indent=2))
        return 0
    print("\n".join(results.lines()))
    if args.sheet:
        print(f"sheet: {args.sheet}")
    return 0


def cmd_select(args):
    from .api.select import DEFAULT_STRATEGY, select, simulate_selection
    from .classify.errors import ClassifyError
    if args.simulate:
        strategies = args.strategy.split(",") if args.strategy else None
        progress = None if args.json else (lambda s, seed, r, n, acc: print(
            f"{s} seed {seed} round {r}: {n} labels, accuracy {acc:.4f}", file=sys.stderr))
        result = simulate_selection(args.cache, budget=args.budget, rounds=args.rounds, seeds=args.seeds,
                                    start_per_class=args.start_per_class, layer=args.layer, strategies=strategies,
                                    on_round=progress)
        if args.plot:
            result.plot(args.plot)
        if args.json:
            print(json.dumps(result.to_dict(), indent=2))
            return 0
        print("\n".join(result.lines()))
        if args.plot:
            print(f"plot: {args.plot}")
        return 0
    if not args.out:
        raise ClassifyError("select writes its picks to a manifest: give --out FILE.csv (in the source's folder)")
    picked = select(args.cache, args.budget, args.out, strategy=args.strategy or DEFAULT_STRATEGY, layer=args.layer,
                    seed=args.seed)
    if args.json:
        print(json.dumps(picked.to_dict(), indent=2))
        return 0
    print("\n".join(picked.lines()))
    return 0


def cmd_backbones(args):
    from .extract.backbones import get_backbone
    from .api.backbones import list_backbones
    from .extract.backbones.listing import format_rows
    if args.nodes:
        spec = get_backbone(args.pattern or "vgg16")
        print(f"{spec.name}: named layers {', '.join(spec.layers)} (default {','.join(spec.defaults)})")
        others = spec.other_layers()
        print(f"{len(others)} more: " + " ".join(others) if others else "no other layers")
        return 0
    found = list_backbones(args.pattern, probe=True if args.widths else None)
    rows, notes = found.rows, found.notes
    if args.json:
        print(json.dumps(found.to_dict(), indent=2))
        return 0
    if rows:
        print("\n".join(format_rows(rows)))
    for note in notes:
        print(note)
    if not rows and args.pattern:
        print(f"no backbone matches {args.pattern!r} (a pattern is matched whole: try '*{args.pattern}*')")
    return 0


def cmd_info(args):
    from .cache import open_cache
    from .cache.fingerprint import describe_value
    with open_cache(args.cache) as c:
        info = c.summary()
    if args.json:
        print(json.dumps(info, indent=2, sort_keys=True))
        return 0
    fp = info["fingerprint"]
    print(f"{info['path']}: {info['rows']} rows, {info['size_bytes'] / 1e6:.1f} MB "
          f"({info['size_bytes'] / max(1, info['rows']) / 1e3:.1f} kB per row)")
    maps = fp.get("map_shapes") or {}
    print("layers:  " + ", ".join(f"{k} ({v}-d" + (f", a {'x'.join(map(str, maps[k]))} map)" if k in maps else ")")
                                  for k, v in info["layers"].items()) + f", stored as {fp.get('dtype')}")
    print("classes: " + ", ".join(f"{k} {v}" for k, v in info["classes"].items())
          + (f"; unlabeled {info['unlabeled']}" if info.get("unlabeled") else ""))
    print("splits:  " + ", ".join(f"{k} {v}" for k, v in info["splits"].items()))
    for key in ("backbone", "weights", "preprocess", "precision", "torch_version", "torchvision_version",
                "backbone_library", "data_root", "schema_version"):
        if key == "backbone_library" and key not in fp:
            continue  # caches made before the zoo did not record it
        value = json.dumps(fp[key]) if isinstance(fp.get(key), dict) else fp.get(key)
        print(f"{key + ':':<21}{value}")
    if fp.get("quantization"):
        print(f"{'quantization:':<21}{describe_value(fp['quantization'])}")
    if fp.get("views"):
        print(f"{'views:':<21}{info['images']} images + {info['view_rows']} view rows: "
              f"{describe_value(fp['views'])}")
    if info.get("vanished"):
        print(f"vanished: {info['vanished']} rows had no file under data_root at the last extract "
              "(`extract --prune` drops them)")
    print(f"failed:  {info['failed']}")
    for item in info["failures"][:20]:
        print(f"  {item['path']}: {item['reason']}")
    print(f"{'to copy:':<21}{info['how_to_copy']}")
    return 0


def cmd_verify(args):
    from .api.verify import verify
    report = verify(args.cache, images=args.images, recompute=args.recompute, data=args.data, weights=args.weights,
                    device=args.device, min_cosine=args.min_cosine)
    if args.json:
        print(json.dumps(report.to_dict(), indent=2))
        return 0 if report.ok else 1
    print(f"{report.path}: {report.rows} rows in {report.segments} segment{'s' if report.segments != 1 else ''}, "
          f"{report.chunks_checked} code chunks "
          "read and checksummed")
    if report.retired:
        print(f"retired: {len(report.retired)} segment file(s) no longer used, kept while a reader may hold an older "
              "version of the cache; the next extract removes them once no reader does")
    if args.images:
        print(f"images: {report.images_checked} re-hashed, {len(report.changed)} changed, {len(report.missing)} missing")
        for path in (report.changed[:20]):
            print(f"  changed: {path}")
        for path in (report.missing[:20]):
            print(f"  missing: {path}")
    if report.worst_cosine is not None:
        print(f"recomputed {report.recomputed} rows: worst cosine to the stored codes {report.worst_cosine:.6f}")
    for problem in report.problems:
        print(f"problem: {in_flags(problem)}")
    print("ok" if report.ok else f"NOT OK: {len(report.problems)} problems, {len(report.changed)} changed and "
          f"{len(report.missing)} missing images")
    return 0 if report.ok else 1


def cmd_export(args):
    from .cache.export import export_cache
    done = export_cache(args.cache, args.out, args.format, args.layer)
    print(f"exported {done['rows']} rows of {done['layer']} ({done['width']}-d) to {', '.join(done['files'])}")
    return 0


def cmd_pack(args):
    from .cache.pack import pack_cache
    done = pack_cache(args.cache, args.out)
    print(f"packed {done['rows']} rows into {args.out} ({done['bytes'] / 1e6:.1f} MB, one self-contained file)")
    return 0


def _result_line(r):
    from .classify.result import Skipped
    if isinstance(r, Skipped):
        return f"{r.classifier}: skipped: {r.skipped}"
    params = ", ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in r.params.items())
    sample = f" ({r.memory})" if (r.memory or "all rows in memory") != "all rows in memory" else ""
    low, high = r.accuracy_ci95 or (0.0, 1.0)
    return (f"{r.classifier}{sample}: {r.eval_split} accuracy {r.accuracy:.4f} "
            f"(95% CI {low:.3f}-{high:.3f}, {r.n_eval} rows), "
            f"balanced {r.balanced_accuracy:.4f}, "
            f"macro F1 {r.macro_f1:.4f}, fit {r.fit_seconds:.2f} s; chosen on {r.selection}"
            + (f": {params}" if params else ""))


def _load_codes(args, layer=None):
    """The cache's codes as the library loads them (cnncodes.load_codes); its notes on stderr."""
    from .api.codes import load_codes
    data = load_codes(args.cache, layer or args.layer, max_memory=args.max_memory, seed=args.seed,
                      with_caches=getattr(args, "with_caches", None), exclude=getattr(args, "exclude", None),
                      exclude_reported=getattr(args, "exclude_reported", False))
    _print_notes(data.notes)
    return data


def _print_notes(notes):
    """The library's notes on stderr, in the command line's words (flags, not parameters)."""
    for note in notes:
        print(in_flags(note), file=sys.stderr)


def cmd_fit(args):
    from .api.fit import fit
    model = fit(_load_codes(args), args.classifier, scaling=args.scaling, seed=args.seed)
    result = model.result
    if args.model:
        model.save(args.model)
    if args.json:
        print(json.dumps(model.to_dict(), indent=2))
    else:
        print(_result_line(result))
        if args.model:
            print(f"model written to {args.model}")
    return 0


def cmd_compare(args):
    from .api.compare import compare
    progress = None if args.json else (lambda result: print(_result_line(result), file=sys.stderr))
    results = compare(_load_codes(args), args.classifiers, scaling=args.scaling, seed=args.seed, on_result=progress)
    paths = results.write_report(args.report) if args.report else None  # nothing written unasked
    if args.json:
        print(json.dumps(results.to_dict(), indent=2))
    else:
        _print_table(results, paths and paths["report.md"])
    return 0


def _print_table(results, report_md):
    from .classify.report import TABLE_NOTE
    best = results.best
    print(f"\nreported split: {best.eval_split} ({best.n_eval} rows)")
    print(results.table())
    print(TABLE_NOTE)
    if report_md:
        print(f"report: {report_md} (also report.html to browse the mistakes, report.json and the plots beside "
              "them)")
    else:
        print("report: none written (--report DIR writes report.md, report.html, report.json and the plots)")


def cmd_audit(args):
    from .api.audit import audit
    found = audit(args.cache, layer=args.layer, threshold=args.threshold, k=args.k, limit=args.limit, seed=args.seed,
                  report=args.report, search=args.search, max_memory=args.max_memory,
                  exclude=getattr(args, "exclude", None),
                  exclude_reported=getattr(args, "exclude_reported", False))
    _print_notes(found.notes)
    if args.json:
        print(json.dumps(found.to_dict(), indent=2, default=str))
        return 0
    print("\n".join(found.lines()))
    if found.report:
        print(f"report: {found.report['audit.md']} (also audit.json: its \"exclude\" list feeds fit/compare --exclude)")
    return 0


def cmd_predict(args):
    from .api.model import predict
    answer = predict(args.model, args.images, top_k=args.top_k, runtime=args.runtime, weights=args.weights,
                     device=args.device, tta=args.tta, precision=args.precision)
    predictions, failures = answer
    for path, reason in failures:
        print(f"failed: {path}: {reason}", file=sys.stderr)
    if args.json:
        print(json.dumps(answer.to_dict(), indent=2))
    elif args.csv:
        import csv
        writer = csv.writer(sys.stdout)
        writer.writerow(["path"] + [f"{c}{i + 1}" for i in range(args.top_k) for c in ("label", "probability")])
        for p in predictions:
            writer.writerow([p["path"]] + [x for t in p["top_k"] for x in (t["label"], f"{t['probability']:.4f}")])
    else:
        width = max([len(p["path"]) for p in predictions] + [4])
        for p in predictions:
            tops = "  ".join(f"{t['label']} {t['probability']:.3f}" for t in p["top_k"])
            print(f"{p['path']:<{width}}  {tops}")
    return 1 if failures and not predictions else 3 if failures else 0  # 3: some images failed (docs/cli.md)


def cmd_export_model(args):
    from .classify.deploy.onnx_export import export_onnx
    done = export_onnx(args.model, args.out, weights_file=args.weights)
    print(f"wrote {done['path']}: {done['bytes'] / 1e6:.1f} MB, {done['backbone']} {done['layer']} -> "
          f"{done['classes']} classes, input uint8 [batch, 3, {done['crop']}, {done['crop']}]")
    return 0


def cmd_index(args):
    from .api.index import index
    say = (lambda text: None) if args.json else (lambda text: print(f"{text} ...", file=sys.stderr))
    summary = index(args.cache, layer=args.layer, kind=args.kind, rebuild=args.rebuild, max_memory=args.max_memory,
                    on_step=say)
    print(json.dumps(summary.to_dict(), indent=2) if args.json else "\n".join(summary.lines()))
    return 0


def cmd_serve(args):
    from .classify.deploy.serve import serve
    serve(args.model, host=args.host, port=args.port, max_batch=args.max_batch, max_wait_ms=args.max_wait_ms,
          max_bytes=args.max_bytes, similar=args.similar, max_memory=args.max_memory)
    return 0


def cmd_demo(args):
    from .api.demo import DEMO_PHOTOS, demo
    if args.data is None:
        print(f"drawn images: {args.per_class} per class" if args.synthetic else
              f"real photos: {DEMO_PHOTOS} (200 flower photos, CC-BY 2.0; see ATTRIBUTION.md there)")
    _, summary, table = demo(args.out, data=args.data, backbone=args.backbone, classifiers=args.classifiers,
                             synthetic=args.synthetic, per_class=args.per_class, progress=args.progress,
                             on_extracted=lambda done: print(in_flags(done.line())),
                             on_result=lambda result: print(_result_line(result), file=sys.stderr))
    _print_table(table, os.path.join(args.out, "report", "report.md"))
    return 0


COMMANDS = {"rank": cmd_rank, "similar": cmd_similar, "select": cmd_select, "extract": cmd_extract, "backbones": cmd_backbones, "info": cmd_info, "verify": cmd_verify,
            "export": cmd_export, "pack": cmd_pack, "fit": cmd_fit, "compare": cmd_compare, "audit": cmd_audit,
            "predict": cmd_predict, "export-model": cmd_export_model, "serve": cmd_serve, "demo": cmd_demo,
            "index": cmd_index}


def build_parser(prog="pipeline.py"):
    from ._cli_options import build_parser as build
    return build(prog, __doc__.splitlines()[0])


def main(argv=None):
    prog = os.path.basename(sys.argv[0]) if argv is None else "pipeline.py"
    parser = build_parser(prog if prog in ("cnncodes", "pipeline.py") else "pipeline.py")
    args, extras = parser.parse_known_args(argv)
    if extras:  # argparse says "unrecognized" under the top-level usage: say it under the verb's, with a hint
        from .classify.registry import did_you_mean
        verb = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction").choices[args.command]
        flags = [f for a in verb._actions for f in a.option_strings]
        bad = extras[0].split("=")[0]
        hint = f" ({bad} goes after the verb: cnncodes {args.command} ... {bad})" if bad in flags else \
            did_you_mean(bad, flags)
        verb.error(f"unrecognized arguments: {' '.join(extras)}{hint}")
    if signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
        signal.signal(signal.SIGTERM, _terminate)
    from .cache.errors import CacheError      # error types live where importing them costs nothing;
    from .classify.errors import ClassifyError  # any other exception is a bug: its traceback shows
    from .extract.errors import ExtractError
    try:
        code = COMMANDS[args.command](args)
        sys.stdout.flush()  # a reader that left shows here, inside the handlers, not at exit
        return code
    except (CacheError, ExtractError, ClassifyError) as exc:
        print(f"error: {in_flags(str(exc))}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as exc:
        print("interrupted", file=sys.stderr)
        return 143 if isinstance(exc, Terminated) else 130
    except ModuleNotFoundError as exc:
        extra = OPTIONAL_EXTRAS.get((exc.name or "").split(".")[0])
        if extra is None:
            raise
        print(f"error: {args.command} needs {exc.name}, which comes with an optional extra: "
              f"pip install 'cnncodes[{extra}]'", file=sys.stderr)
        return 2
    except BrokenPipeError:  # `cnncodes info codes.h5 | head`: the reader left; end quietly
        if not _stdout_closed():
            raise  # another pipe (a worker's, a socket): a real error
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())  # Python's own flush at exit would raise again
        return 141  # as a process the pipe's SIGPIPE ends (128 + 13)


@functools.lru_cache(maxsize=1)
def flag_table() -> dict:
    """Python parameter name -> (the command line's flag, whether it takes a value), read from the
    parser: each flag by its own name (--crop-size: crop_size) and by its destination (--with:
    with_caches). The one place the library's names become flags."""
    parser = build_parser()
    verbs = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction").choices
    table = {}
    for verb in verbs.values():
        for action in verb._actions:
            flags = [f for f in action.option_strings if f.startswith("--") and f != "--help"]
            for flag in flags:
                for name in {flag[2:].replace("-", "_"), action.dest}:
                    table.setdefault(name, (flag, action.nargs != 0))
    table["progress"] = ("--no-progress", False)
    return table


# a parameter stands alone: at the start, or after a space, "(", "," or ";" (never inside a path
# such as runs/seed=3/codes.h5, a URL's query, or a backticked command)
_PARAMETER = re.compile(r"(?<![^\s(,;])([a-z][a-z0-9_]*)=(True\b|False\b)?")


def in_flags(text: str) -> str:
    """A library message in the command line's words: ``crop_size=0`` reads ``--crop-size 0``,
    ``prune=True`` reads ``--prune``. Names that are no parameter of any verb stay as written."""
    table = flag_table()

    def in_words(part):
        def flag(match):
            name = match.group(1)
            if name not in table:
                return match.group(0)
            option, takes_value = table[name]
            if not takes_value:
                return option
            rest = part[match.end():match.end() + 1]
            return option if not rest or rest in " ,;:.)" else option + " "
        return _PARAMETER.sub(flag, part)
    parts = text.split("`")  # odd parts are backticked commands: pasted as they are
    return "`".join(part if i % 2 else in_words(part) for i, part in enumerate(parts))


def _stdout_closed() -> bool:
    """Whether the reader of standard output went away (its pipe reports an error)."""
    import select
    try:
        poller = select.poll()
        poller.register(sys.stdout.fileno(), select.POLLOUT)
        return any(events & (select.POLLERR | select.POLLHUP) for _, events in poller.poll(0))
    except (OSError, ValueError):
        return False


# the packages of the optional extras (pyproject.toml), for a one-line "pip install" where one is missing
OPTIONAL_EXTRAS = {"onnx": "deploy", "onnxscript": "deploy", "onnxruntime": "deploy", "aiohttp": "deploy",
                   "ray": "ray", "timm": "zoo", "open_clip": "zoo", "fsspec": "remote", "s3fs": "remote",
                   "cleanlab": "audit", "faiss": "index"}


if __name__ == "__main__":
    sys.exit(main())
