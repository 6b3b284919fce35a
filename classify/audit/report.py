"""The audit's words and files: summary lines, audit.md, audit.json and a picture sheet of the
closest pairs (thumbnails from the photos, or a note where they are gone)."""
import json
import os


def summary_lines(found) -> list:
    c = found["counts"]
    lines = [f"{found['cache']}: {found['photos']:,} photos ({found['backbone']} {found['layer']})",
             f"exact duplicates: {c['exact_groups']} groups, {c['exact_crossing_splits']} across splits, "
             f"{c['exact_label_conflicts']} with conflicting labels",
             f"near duplicates (cosine >= {found['threshold']:g}, {found['threshold_source']}): {c['near_pairs']} "
             f"pairs, {c['near_crossing_splits']} across splits, {c['near_label_conflicts']} with different labels",
             f"near-pair search: {found.get('search', '')}",
             f"leaks: {c['leaked']} val/test photos have an exact or near twin in train",
             f"likely label errors: {c['likely_label_errors']} ({found['label_rule'] or 'no labels to check'})"]
    effect = found.get("effect_on_score") or {}
    if effect.get("accuracy") is not None:
        without = effect["accuracy_without_leaked"]
        sampled = (f" (trained on a sample of {effect['trained_on']:,} of the {effect['training_rows']:,} training rows)"
                   if effect.get("trained_on", 0) < effect.get("training_rows", 0) else "")
        lines.append(f"{effect['eval_split']} accuracy (logreg{sampled}): {effect['accuracy']:.4f} on {effect['n_eval']} rows; "
                     + (f"{without:.4f} on the {effect['n_without_leaked']} without leaked rows"
                        if without is not None else "no rows left without the leaked ones"))
    elif effect.get("skipped"):
        lines.append(f"effect on the score: not measured ({effect['skipped']})")
    return lines


def _row(r) -> str:
    return f"`{r['path']}` ({r['split']}, {r['label']})"


def write_audit(out_dir, found, data_root, data=None) -> dict:
    """audit.md, audit.json and the picture sheets; with ``data`` (the codes audited) audit.html too."""
    os.makedirs(out_dir, exist_ok=True)
    paths = {"audit.md": os.path.join(out_dir, "audit.md"), "audit.json": os.path.join(out_dir, "audit.json")}
    with open(paths["audit.json"], "w") as f:
        json.dump(found, f, indent=2, default=str)
    md = ["# cnncodes audit", "", *[f"- {line}" for line in summary_lines(found)], ""]
    md += ["## Exact duplicates", ""] + [
        "- " + " = ".join(_row(r) for r in g["rows"]) + (" **(across splits)**" if g["crosses_splits"] else "")
        + (" **(labels differ)**" if g["label_conflict"] else "") for g in found["exact_duplicates"][:200]] + [""]
    md += ["## Near duplicates (closest first)", ""] + [
        f"- {p['cosine']:.4f}: {_row(p['rows'][0])} ~ {_row(p['rows'][1])}"
        + (" **(across splits)**" if p["crosses_splits"] else "") for p in found["near_duplicates"][:200]] + [""]
    md += ["## Likely label errors (most suspicious first)", "",
           "| photo | split | given | suggested | p(given) | p(suggested) |", "|---|---|---|---|---|---|"] + [
        f"| `{r['path']}` | {r['split']} | {r['label']} | {r['suggested']} | {r['p_given']:.3f} | {r['p_suggested']:.3f} |"
        for r in found["label_issues"]] + [""]
    md += ["## Outliers (farthest from their neighbours)", ""] + [
        f"- {r['knn_distance']:.4f}: {_row(r)}" for r in found["outliers"][:20]] + [""]
    groups = (found["exact_duplicates"] + found["near_duplicates"])[:12]
    sheets = {
        "pairs.png": ("The closest pairs", [[(r, f"{r['split']} / {r['label']}") for r in g["rows"][:2]] for g in groups]),
        "label_errors.png": ("Likely label errors: given -> suggested",
                             _rows_of([(r, f"{r['label']} -> {r['suggested']}") for r in found["label_issues"][:16]])),
        "outliers.png": ("Outliers", _rows_of([(r, f"{r['label']} d={r['knn_distance']:.2f}")
                                               for r in found["outliers"][:16]])),
    }
    for name, (title, tiles) in sheets.items():
        sheet = os.path.join(out_dir, name)
        missing = _tile_sheet(sheet, tiles, data_root)
        if os.path.exists(sheet):
            paths[name] = sheet
            md += [f"## {title}", "", f"![{title}]({name})", ""]
            if missing:
                md += [f"{missing} photos are no longer under {data_root} (grey tiles).", ""]
        elif tiles:
            md += [f"## {title}", "", f"The photos are not under {data_root}, so no picture sheet could be drawn.", ""]
    with open(paths["audit.md"], "w") as f:
        f.write("\n".join(md))
    if data is not None:
        paths["audit.html"] = os.path.join(out_dir, "audit.html")
        write_audit_html(paths["audit.html"], found, data, data_root)
    return paths


def _rows_of(tiles, per_row=4) -> list:
    return [tiles[i:i + per_row] for i in range(0, len(tiles), per_row)]


def _tile_sheet(path, tiles, data_root) -> int:
    """A grid of thumbnails, ``tiles`` a list of rows of (audit row, caption); returns how many
    photos were missing. Writes nothing when every photo is missing (or there are none)."""
    if not tiles:
        return 0
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    from ..report_html import thumbnail
    images, missing, total = [], 0, 0
    for line in tiles:
        drawn = []
        for r, caption in line:
            total += 1
            image = thumbnail(data_root, r["path"], 128)
            missing += image is None
            drawn.append((np.full((128, 128, 3), 200, np.uint8) if image is None else image, caption))
        images.append(drawn)
    if missing == total:
        return missing
    columns = max(len(line) for line in images)
    fig, axes = plt.subplots(len(images), columns, figsize=(2.2 * columns, 2.2 * len(images)), squeeze=False)
    for line, row in zip(images, axes):
        for k, ax in enumerate(row):
            ax.axis("off")
            if k < len(line):
                ax.imshow(line[k][0])
                ax.set_title(line[k][1], fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return missing


FLAGS = ["exact or near duplicate", "leaked into val/test", "likely label error", "outlier", "none"]


def write_audit_html(path, found, data, data_root, seed=0) -> dict:
    """audit.html: the closest pairs side by side, leaks, likely label errors (given -> suggested)
    and outliers with their photos, and the map of the codes coloured by class, split or audit flag.
    Returns {"bytes", "seconds"}."""
    import html
    import time

    import numpy as np

    from .. import report_html as page
    started = time.perf_counter()
    X, _, paths, _, colourings = page.map_rows(data)
    at = {p: i for i, p in enumerate(paths)}
    flag = np.full(len(paths), len(FLAGS) - 1)
    flagged = []
    marks = [(3, [r["path"] for r in found["outliers"]]), (2, [r["path"] for r in found["label_issues"]]),
             (1, list(found["leaked"])),
             (0, [r["path"] for g in found["exact_duplicates"] + found["near_duplicates"] for r in g["rows"]])]
    for index, marked in marks:  # later marks win: a duplicate is shown as one even when also an outlier
        rows = [at[p] for p in marked if p in at]
        flag[rows] = index
    for _, marked in reversed(marks):
        flagged += [at[p] for p in marked if p in at]
    payload = {"map": page.map_payload(
        X, paths, {"audit flag": (FLAGS, flag), **colourings}, page.bounded_rows(len(paths), flagged, seed), data_root, seed)}
    thumbs = payload["map"]["thumbs"]

    def photo(p):
        return page.img(thumbs.get(str(at.get(p, -1))), p)

    pairs = [[photo(g["rows"][0]["path"]), photo(g["rows"][1]["path"]),
              f'{g.get("cosine", 1.0):.4f}', html.escape(f'{g["rows"][0]["path"]} ({g["rows"][0]["split"]}, '
                                                       f'{g["rows"][0]["label"]})'),
              html.escape(f'{g["rows"][1]["path"]} ({g["rows"][1]["split"]}, {g["rows"][1]["label"]})'),
              "across splits" if g["crosses_splits"] else "", "labels differ" if g["label_conflict"] else ""]
             for g in (found["exact_duplicates"] + found["near_duplicates"])[:200]]
    issues = [[photo(r["path"]), html.escape(r["path"]), html.escape(str(r["split"])),
               html.escape(f'{r["label"]} -> {r["suggested"]}'), f'{r["p_given"]:.3f}', f'{r["p_suggested"]:.3f}']
              for r in found["label_issues"]]
    outliers = [[photo(r["path"]), html.escape(r["path"]), html.escape(str(r["split"])), html.escape(str(r["label"])),
                 f'{r["knn_distance"]:.4f}'] for r in found["outliers"]]
    sections = [
        "<h1>cnncodes audit</h1>",
        "<ul>" + "".join(f"<li>{html.escape(line)}</li>" for line in summary_lines(found)) + "</ul>",
        f"<h2>Exact and near duplicates ({len(pairs)} shown, closest first)</h2>",
        page.table(["photo", "its twin", "cosine", "first", "second", "", ""], pairs, sortable=True, cls="pairs"),
        f"<h2>Leaked: val/test photos with a twin in train ({len(found['leaked'])})</h2>",
        '<div class="photos">' + "".join(f"<figure>{photo(p)}<figcaption>{html.escape(p)}</figcaption></figure>"
                                         for p in found["leaked"][:200]) + "</div>",
        f"<h2>Likely label errors ({len(issues)}, most suspicious first)</h2>",
        page.table(["photo", "path", "split", "given -> suggested", "p(given)", "p(suggested)"], issues,
                   sortable=True, cls="issues"),
        f"<h2>Outliers ({len(outliers)}, farthest from their neighbours first)</h2>",
        page.table(["photo", "path", "split", "label", "distance"], outliers, sortable=True, cls="outliers"),
        page.map_section(payload["map"]),
    ]
    done = page.write_page(path, f"cnncodes audit: {found['cache']}", sections, payload)
    done["seconds"] = time.perf_counter() - started
    return done
