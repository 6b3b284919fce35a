"""The compare report: a table for the terminal, report.md, report.json, two plots and the best
classifier's mistakes as a grid of thumbnails."""
import json
import os
import time

from .report_html import thumbnail  # noqa: F401  (the mistakes sheet; also read from here)
from .result import FitResult, as_json

TABLE_COLUMNS = ("classifier", "accuracy", "balanced_accuracy", "macro_f1", "fit_seconds", "params")


def fitted_results(results) -> list:
    """The results of ``compare`` that are not skipped."""
    return [r for r in results if isinstance(r, FitResult)]


def best_result(results):
    return max(fitted_results(results), key=lambda r: (r.accuracy, r.balanced_accuracy))


def table_cells(results) -> tuple:
    """(header, rows of text cells): best first; skipped classifiers last, with their reason."""
    rows = [[r.classifier, f"{r.accuracy:.4f}", _interval(r), f"{r.balanced_accuracy:.4f}",
             f"{r.macro_f1:.4f}", f"{r.fit_seconds:.2f}", _versus_best(r),
             ", ".join(f"{k}={_short(v)}" for k, v in r.params.items()) or "-"]
            for r in sorted(fitted_results(results), key=lambda r: -r.accuracy)]
    rows += [[r.classifier, "skipped", "-", "-", "-", "-", "-", r.skipped] for r in results if not isinstance(r, FitResult)]
    header = ["classifier", "accuracy", "95% CI", "bal. acc.", "macro F1", "fit s", "vs best", "chosen"]
    return header, rows


def format_table(results, markdown=False) -> str:
    """The comparison as text (aligned columns) or a markdown table."""
    header, rows = table_cells(results)
    if markdown:
        lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in rows])
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows)]
    fmt = "  ".join(f"{{:<{w}}}" for w in widths)
    return "\n".join([fmt.format(*header)] + [fmt.format(*row) for row in rows])


# Under the table: what its intervals and its "vs best" column mean.
TABLE_NOTE = ("95% CI: Wilson interval of the accuracy on these rows. vs best: McNemar's exact test against the "
              "best on the same rows; '~' = not distinguishable from it (p >= 0.05), 'worse' = p < 0.05")


def _interval(r) -> str:
    low, high = r.accuracy_ci95 or (None, None)
    return f"{low:.3f}-{high:.3f}" if low is not None else "-"


def _versus_best(r) -> str:
    if not r.compared:
        return "-"
    if r.p_vs_best is None:
        return "best"
    return f"{'~' if r.indistinguishable_from_best else 'worse'} p={r.p_vs_best:.2g}"


def _selection_line(results) -> str:
    """How the table's hyper-parameters were chosen: said of every head, not of the best alone."""
    none = [r.classifier for r in results if not r.params]
    chosen = {}
    for r in results:
        if r.params:
            chosen.setdefault(r.selection, []).append(r.classifier)
    parts = [f"{', '.join(names)} on {selection}" for selection, names in chosen.items()]
    line = "- hyper-parameters (the table's chosen column): " + ("; ".join(parts) if parts else "none")
    if parts:
        line += ", then each refit on all non-reported rows"
    return line + (f"; {', '.join(none)}: none to choose" if none and parts else "")


def _short(v):
    return f"{v:.3g}" if isinstance(v, float) else str(v)


def write_report(out_dir, results, data, context: dict) -> dict:
    """Write report.md, report.json, confusion.png (best classifier) and accuracy.png; returns paths."""
    os.makedirs(out_dir, exist_ok=True)
    best = best_result(results)
    paths = {name: os.path.join(out_dir, name) for name in ("report.md", "report.json", "confusion.png", "accuracy.png")}
    with open(paths["report.json"], "w") as f:
        json.dump({**context, "best": best.classifier, "results": as_json(results)}, f, indent=2, default=str)
    _plot_confusion(paths["confusion.png"], best, data.class_names)
    _plot_accuracy(paths["accuracy.png"], fitted_results(results), best.eval_split)
    mistakes_md = _mistakes_section(out_dir, best, data.fingerprint.provenance.get("data_root"))
    if os.path.exists(os.path.join(out_dir, "mistakes.png")):
        paths["mistakes.png"] = os.path.join(out_dir, "mistakes.png")
    per_class = "\n".join(f"| {name} | {acc:.4f} |" if acc is not None else f"| {name} | - |"
                          for name, acc in best.per_class_accuracy.items())
    md = [
        "# cnncodes compare report", "",
        f"- cache: `{context['cache']}` (backbone {context['backbone']}, layer {best.layer}, weights {context['weights']})",
        f"- reported split: **{best.eval_split}** ({best.n_eval} rows); models fit on {best.n_fit} rows",
        _selection_line(fitted_results(results)),
        f"- scaling: {context['scaling']} (the seed recipe uses raw codes); seed {context['seed']}", "",
        format_table(results, markdown=True), "", TABLE_NOTE, "",
        f"## Best: {best.classifier}", "",
        "![confusion matrix](confusion.png)", "", "| class | accuracy |", "|---|---|", per_class, "",
        "![accuracy by classifier](accuracy.png)", "",
        *mistakes_md,
    ]
    with open(paths["report.md"], "w") as f:
        f.write("\n".join(md))
    paths["report.html"] = os.path.join(out_dir, "report.html")
    write_html(paths["report.html"], results, data, context)
    return paths


def write_html(path, results, data, context, seed=0) -> dict:
    """report.html: the table, the best classifier's clickable confusion matrix and sortable
    mistakes, and the map of the codes (class, split, right/wrong). Returns {"bytes", "seconds"}."""
    import html

    import numpy as np

    from . import report_html as page
    started = time.perf_counter()
    best = best_result(results)
    X, cache_rows, paths, y, colourings = page.map_rows(data)
    position = {int(r): i for i, r in enumerate(cache_rows)}
    classes = list(data.class_names)
    eval_at = np.array([position.get(int(r), -1) for r in best.eval_rows])
    seen = eval_at >= 0
    correct = np.full(len(paths), 2)
    correct[eval_at[seen]] = np.where(best.eval_predicted[seen] == y[eval_at[seen]], 0, 1)
    wrong_first = eval_at[seen][np.argsort(best.eval_probability[seen] * (correct[eval_at[seen]] == 0))]
    payload = {"classes": classes, "map": page.map_payload(
        X, paths,
        {**colourings,
         f"right or wrong ({best.classifier} on {best.eval_split})": (["right", "wrong", "not reported"], correct)},
        page.bounded_rows(len(paths), wrong_first, seed), data.fingerprint.provenance.get("data_root"), seed)}
    cells = {}
    for at, predicted, probability in zip(eval_at, best.eval_predicted, best.eval_probability):
        if at >= 0:
            cells.setdefault(f"{int(y[at])},{int(predicted)}", []).append([int(at), round(float(probability), 4)])
    payload["cells"] = cells
    matrix = np.array(best.confusion_matrix)
    rows_html = "".join(
        "<tr><th>" + html.escape(classes[t]) + "</th>" + "".join(
            f'<td class="cell" data-t="{t}" data-p="{p}">{matrix[t, p]}</td>' for p in range(len(classes))) + "</tr>"
        for t in range(len(classes)))
    confusion = (f'<table class="confusion"><thead><tr><th>true \\ predicted</th>'
                 + "".join(f"<th>{html.escape(c)}</th>" for c in classes) + f"</tr></thead><tbody>{rows_html}</tbody></table>")
    thumbs = payload["map"]["thumbs"]
    mistakes = [[page.img(thumbs.get(str(position.get(m["row"], -1)))), html.escape(m["path"]), html.escape(m["true"]),
                 html.escape(m["predicted"]), f'{m["probability"]:.3f}'] for m in best.mistakes]
    versus = {r.classifier: _versus_best(r) for r in fitted_results(results)}
    table_rows = [[html.escape(r.classifier), f"{r.accuracy:.4f}", _interval(r), f"{r.balanced_accuracy:.4f}",
                   f"{r.macro_f1:.4f}", f"{r.fit_seconds:.2f}", versus[r.classifier],
                   html.escape(", ".join(f"{k}={_short(v)}" for k, v in r.params.items()) or "-")]
                  for r in sorted(fitted_results(results), key=lambda r: -r.accuracy)]
    table_rows += [[html.escape(r.classifier), "skipped", "", "", "", "", "", html.escape(r.skipped)]
                   for r in results if not isinstance(r, FitResult)]
    sections = [
        "<h1>cnncodes compare report</h1>",
        f"<p>cache <code>{html.escape(str(context['cache']))}</code>: backbone {html.escape(str(context['backbone']))}, "
        f"layer {html.escape(best.layer)}; reported split <b>{html.escape(best.eval_split)}</b> ({best.n_eval} rows), "
        f"models fit on {best.n_fit} rows. {html.escape(_selection_line(fitted_results(results))[2:])}.</p>",
        "<h2>Classifiers</h2>", page.table(["classifier", "accuracy", "95% CI", "bal. acc.", "macro F1", "fit s",
                                              "vs best", "chosen"], table_rows, sortable=True, cls="results"),
        f'<p class="muted">{html.escape(TABLE_NOTE)}</p>',
        f"<h2>Confusion matrix: {html.escape(best.classifier)} on {html.escape(best.eval_split)}</h2>",
        '<p class="muted">Click a cell for its photos.</p>', confusion, '<div id="cell-photos"></div>',
        f"<h2>Mistakes of {html.escape(best.classifier)} ({len(best.mistakes)}, most confident first)</h2>",
        page.table(["photo", "path", "true", "predicted", "probability"], mistakes, sortable=True, cls="mistakes"),
        page.map_section(payload["map"]),
    ]
    done = page.write_page(path, f"cnncodes compare: {context['cache']}", sections, payload)
    done["seconds"] = time.perf_counter() - started
    return done


def _plot_confusion(path, result, class_names):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.metrics import ConfusionMatrixDisplay
    import numpy as np
    fig, ax = plt.subplots(figsize=(1.2 * len(class_names) + 2, 1.2 * len(class_names) + 1.5))
    ConfusionMatrixDisplay(np.array(result.confusion_matrix), display_labels=class_names).plot(
        ax=ax, colorbar=False, xticks_rotation=45)
    ax.set_title(f"{result.classifier} on {result.eval_split}: accuracy {result.accuracy:.3f}")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _plot_accuracy(path, results, split):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    ordered = sorted(results, key=lambda r: r.accuracy)
    fig, ax = plt.subplots(figsize=(7, 0.45 * len(ordered) + 1.2))
    bars = ax.barh([r.classifier for r in ordered], [r.accuracy for r in ordered], color="#4c72b0")
    ax.bar_label(bars, fmt="%.3f", padding=3)
    ax.set_xlim(0, 1.08)
    ax.set_xlabel(f"accuracy on {split}")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


MISTAKES_SHOWN = 40


def _mistakes_section(out_dir, best, data_root) -> list:
    """mistakes.png (thumbnails of the best classifier's misclassified photos) and its report lines."""
    mistakes = best.mistakes or []
    target = os.path.join(out_dir, "mistakes.png")
    if os.path.exists(target):
        os.remove(target)  # a stale grid from an earlier run must not pass for this one
    if not mistakes:
        return [f"## Mistakes of {best.classifier}", "", f"None on {best.eval_split}.", ""]
    shown = mistakes[:MISTAKES_SHOWN]
    missing = _plot_mistakes(target, shown, data_root)
    lines = [f"## Mistakes of {best.classifier}", "",
             f"{len(mistakes)} of {best.n_eval} {best.eval_split} rows misclassified; the "
             f"{len(shown)} most confident are shown (true → predicted, probability of the prediction).", ""]
    if missing == len(shown):
        lines += [f"The photos are no longer under {data_root}, so no thumbnails could be drawn:", ""]
        lines += [f"- `{m['path']}`: {m['true']} → {m['predicted']} ({m['probability']:.2f})" for m in shown]
        return lines + [""]
    if missing:
        lines += [f"{missing} of them are no longer on disk under {data_root} (grey tiles).", ""]
    return lines + ["![misclassified photos](mistakes.png)", ""]


def _plot_mistakes(path, mistakes, data_root) -> int:
    """Draw the grid; returns how many photos were missing. Writes nothing if all are missing."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np
    images = [thumbnail(data_root, m["path"], 160) for m in mistakes]
    missing = sum(image is None for image in images)
    if missing == len(mistakes):
        return missing
    cols = min(8, len(mistakes))
    rows = -(-len(mistakes) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(2.0 * cols, 2.3 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, m, image in zip(axes.flat, mistakes, images):
        if image is None:
            ax.imshow(np.full((16, 16, 3), 200, np.uint8))
            ax.text(8, 8, "not on disk", ha="center", va="center", fontsize=8)
        else:
            ax.imshow(image)
        ax.set_title(f"{m['true']} → {m['predicted']}\n{m['probability']:.2f}", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=90, bbox_inches="tight")
    plt.close(fig)
    return missing
