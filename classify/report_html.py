"""report.html: one self-contained page to look at, not read. Opens offline from disk or an e-mail:
no network at all (its Content-Security-Policy forbids any request), scripts and styles inline,
thumbnails inline as small JPEGs.

A page is sections of HTML plus one JSON payload the inline script reads: the map of the codes (a
2-D projection drawn on a canvas, so 100,000 points stay responsive; colourings switchable; hover
shows a photo, click its nearest neighbours by cosine in the codes), clickable confusion cells and
sortable tables. The page sets ``window.report`` (points drawn, colouring) for tests.
"""
import base64
import html
import io
import json
import os
import time

import numpy as np

from .cosine import array_blocks, top_k
from .cosine import unit as _unit
from .gather import float32_rows

THUMBNAILS = 600          # photos embedded at most (the flagged ones first, then a seeded sample)
THUMB_SIZE = 72
NEIGHBOURS = 8            # nearest rows shown on a click (cosine, in the codes)
TSNE_ROWS = 5000          # t-SNE where the rows are at most this many, else PCA
PLANE_FIT_ROWS = 100_000  # PCA's axes from at most this many rows (a seeded sample)
PALETTE = ["#4c72b0", "#dd8452", "#55a868", "#c44e52", "#8172b3", "#937860", "#da8bc3", "#8c8c8c", "#ccb974",
           "#64b5cd", "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f"]


def project(X, seed=0) -> tuple:
    """(xy float32 [n, 2], how): t-SNE (on 50 PCA components) up to TSNE_ROWS rows, else PCA."""
    X = np.asarray(X)
    n = len(X)
    if n < 3:
        return np.zeros((n, 2), dtype=np.float32), "none (fewer than 3 rows)"
    if n > TSNE_ROWS:
        return principal_plane(X), (f"PCA: the first two principal components of the unit-length codes (t-SNE up "
                                    f"to {TSNE_ROWS:,} rows)")
    from sklearn.decomposition import PCA
    from sklearn.manifold import TSNE
    U = _unit(X)  # cosine geometry
    reduced = PCA(n_components=min(50, U.shape[1], n), random_state=seed).fit_transform(U)
    perplexity = min(30.0, (n - 1) / 3)
    xy = TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=seed).fit_transform(reduced)
    how = f"t-SNE (scikit-learn, perplexity {perplexity:.0f}) of the unit-length codes' 50 principal components"
    return np.asarray(xy, dtype=np.float32), how


def principal_plane(X, block=65536, seed=0) -> np.ndarray:
    """The unit-length rows of X on their first two principal components [n, 2], a block of rows at
    a time: the covariance (D x D) is summed over blocks and its top eigenvectors taken, so memory
    stays the codes plus one block (scikit-learn's PCA centres a full copy: 20 GB at a million
    rows beside 5 GB of codes). Past PLANE_FIT_ROWS rows the covariance is a seeded sample's (two
    axes of a map need no more; summed over a million rows it was most of audit.html's time), and
    every row is projected. Signs as scikit-learn's svd_flip sets them: each axis's largest
    loading positive."""
    n, width = X.shape
    fit = np.arange(n) if n <= PLANE_FIT_ROWS else np.sort(
        np.random.default_rng(seed).choice(n, PLANE_FIT_ROWS, replace=False))
    total, gram = np.zeros(width), np.zeros((width, width))
    buffer = np.empty((min(block, n), width), dtype=np.float32)  # codes held as float16 are converted into it
    for start in range(0, len(fit), block):
        U = _unit(float32_rows(X, fit[start:start + block] if len(fit) < n else slice(start, start + block), buffer))
        total += U.sum(axis=0, dtype=np.float64)
        gram += U.T @ U
    mean = total / len(fit)
    _, vectors = np.linalg.eigh(gram / len(fit) - np.outer(mean, mean))
    axes = vectors[:, ::-1][:, :2]
    axes *= np.sign(axes[np.abs(axes).argmax(axis=0), [0, 1]])
    axes, mean = axes.astype(np.float32), mean.astype(np.float32)
    # (unit(row) - mean) @ axes, as (row @ axes) / |row| - mean @ axes: no unit copy of each block
    out = np.empty((n, 2), dtype=np.float32)
    for start in range(0, n, block):
        rows = float32_rows(X, slice(start, start + block), buffer)
        norms = np.maximum(np.sqrt(np.einsum("ij,ij->i", rows, rows)), 1e-12)
        out[start:start + block] = (rows @ axes) / norms[:, None] - mean @ axes
    return out


def nearest(X, rows, k=NEIGHBOURS, budget_bytes=64 << 20) -> dict:
    """row -> [(other row, cosine)] of its k nearest among every row of X, for ``rows`` only: the
    cosine engine over X a block at a time (no unit copy of every code)."""
    rows = np.asarray(rows, dtype=np.int64)
    if not len(rows):
        return {}
    best_rows, best = top_k(X[rows], array_blocks(X, len(rows), budget_bytes), k, exclude=rows)
    return {int(r): [(int(o), round(float(s), 4)) for o, s in zip(orows, scores) if np.isfinite(s)]
            for r, orows, scores in zip(rows, best_rows, best)}


def thumbnail(data_root, path, size):
    """The photo at ``path`` under the source ``data_root`` as an RGB array of at most size x size,
    or None where it cannot be read (gone, or a source such as tar shards). A manifest's relative
    paths start at its folder."""
    from PIL import Image
    root = os.path.dirname(data_root) if data_root and os.path.isfile(data_root) else (data_root or "")
    try:
        with Image.open(os.path.join(root, path or "")) as img:
            img.draft("RGB", (size, size))
            img = img.convert("RGB")
            img.thumbnail((size, size))
            return np.asarray(img)
    except (OSError, ValueError):
        return None


def map_rows(data):
    """What a page maps: the centre views of the codes held in memory (a subsample past the
    budget). Returns (codes, cache rows, paths, labels, the class and split colourings)."""
    from ..cache import open_cache
    held = data.in_memory()
    centre = np.flatnonzero(held.views == 0) if held.views is not None else np.arange(len(held.y))
    cache_rows = held.cache_rows(centre)
    with open_cache(data.path) as c:
        paths = c.paths_of(cache_rows)
    classes, y = list(data.class_names), held.y[centre]
    splits = held.splits[centre].astype(str)
    split_names = sorted(set(splits.tolist()))
    colourings = {"class": (classes + ["unlabelled"], np.where(y >= 0, y, len(classes))),
                  "split": (split_names, np.searchsorted(split_names, splits))}
    codes = held.X if len(centre) == len(held.X) else held.X[centre]  # every row a centre view: no copy
    return codes, cache_rows, paths, y, colourings


def thumbnails(data_root, paths: dict, size=THUMB_SIZE) -> dict:
    """row -> data: URI of a small JPEG, for the rows whose photo can be read under the source."""
    from PIL import Image
    out = {}
    for row, path in paths.items():
        image = thumbnail(data_root, path, size)
        if image is None:
            continue
        buf = io.BytesIO()
        Image.fromarray(image).save(buf, "JPEG", quality=70)
        out[int(row)] = "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode()
    return out


def bounded_rows(n, first, seed=0, limit=THUMBNAILS) -> np.ndarray:
    """The rows whose photos are embedded: ``first`` (the flagged ones) in order, then a seeded
    sample of the rest, at most ``limit`` in all."""
    first = list(dict.fromkeys(int(r) for r in first))[:limit]
    rest = np.setdiff1d(np.arange(n), first)
    extra = np.random.default_rng(seed).permutation(rest)[:max(0, limit - len(first))]
    return np.array(first + sorted(extra.tolist()), dtype=np.int64)


def map_payload(X, paths, colourings: dict, thumbs_for, data_root, seed=0) -> dict:
    """What the map section needs: positions, colourings {name: (legend, index per row)}, paths,
    embedded photos and each embedded row's neighbours."""
    xy, how = project(X, seed)
    thumbs = thumbnails(data_root, {int(r): paths[int(r)] for r in thumbs_for})
    return {
        "x": [round(float(v), 3) for v in xy[:, 0]], "y": [round(float(v), 3) for v in xy[:, 1]],
        "how": how, "paths": list(paths),
        "colourings": {name: {"legend": list(legend), "index": [int(i) for i in index]}
                       for name, (legend, index) in colourings.items()},
        "thumbs": {str(r): uri for r, uri in thumbs.items()},
        "neighbours": {str(r): v for r, v in nearest(X, np.array(sorted(thumbs), dtype=np.int64)).items()},
        "embedded": len(thumbs),
    }


def table(headers, rows, sortable=False, cls="") -> str:
    head = "".join(f"<th{' data-sort' if sortable else ''}>{html.escape(str(h))}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{cell}</td>" for cell in row) + "</tr>" for row in rows)
    return f'<table class="{cls}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def img(uri, title="") -> str:
    return f'<img src="{uri}" title="{html.escape(title)}" alt="">' if uri else '<span class="nothumb">no photo</span>'


def write_page(path, title, sections: list, payload: dict) -> dict:
    """Write the page atomically; returns {"bytes", "seconds"} (seconds: the JSON and the write)."""
    started = time.perf_counter()
    data = json.dumps(payload, separators=(",", ":")).replace("</", "<\\/")
    page = PAGE.format(title=html.escape(title), style=STYLE, body="\n".join(sections), data=data, script=SCRIPT)
    temporary = path + ".tmp"
    with open(temporary, "w", encoding="utf-8") as f:
        f.write(page)
    os.replace(temporary, path)
    return {"bytes": os.path.getsize(path), "seconds": time.perf_counter() - started}


PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; img-src data:; style-src 'unsafe-inline'; script-src 'unsafe-inline'">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title}</title><style>{style}</style></head>
<body>
{body}
<script id="payload" type="application/json">{data}</script>
<script>{script}</script>
</body></html>
"""

STYLE = """
body{font:14px/1.4 system-ui,sans-serif;margin:24px;color:#222;max-width:1300px}
h1{font-size:22px}h2{font-size:17px;margin-top:28px;border-bottom:1px solid #ddd}
table{border-collapse:collapse;margin:8px 0}td,th{border:1px solid #ddd;padding:3px 7px;text-align:left;vertical-align:top}
th[data-sort]{cursor:pointer;background:#f4f4f4}th[data-sort]:after{content:" \\2195";color:#999}
.confusion td.cell{cursor:pointer;text-align:right;min-width:36px}.confusion td.cell:hover{outline:2px solid #333}
.photos{display:flex;flex-wrap:wrap;gap:6px;margin:6px 0}.photos figure{margin:0;width:84px;font-size:10px;word-break:break-all}
img{display:block;max-width:72px;max-height:72px}.nothumb{color:#999;font-size:11px}
#map{border:1px solid #ccc;cursor:crosshair}#tip{position:absolute;background:#fff;border:1px solid #999;padding:4px;
font-size:11px;pointer-events:none;display:none;max-width:220px;word-break:break-all}
.legend span{display:inline-block;margin-right:10px}.legend i{display:inline-block;width:10px;height:10px;margin-right:3px}
.pair{display:flex;gap:8px;align-items:center;margin:4px 0}.muted{color:#777}
"""

SCRIPT = r"""
(function(){
const data = JSON.parse(document.getElementById('payload').textContent);
const report = window.report = {ready:false, pointsDrawn:0, colouring:null};
const palette = %PALETTE%;
function esc(s){return String(s).replace(/[&<>"]/g,c=>({'&':'&amp;','<':'&lt;','>':'&gt;','"':'&quot;'}[c]));}
function photo(row, caption){
  const uri = data.map && data.map.thumbs[row];
  const path = data.map ? data.map.paths[row] : '';
  return '<figure>' + (uri ? '<img src="'+uri+'" alt="">' : '<span class="nothumb">not embedded</span>') +
         '<figcaption>' + esc(caption || '') + '<br>' + esc(path) + '</figcaption></figure>';
}
// sortable tables: click a header
document.querySelectorAll('th[data-sort]').forEach(function(th, _){
  th.addEventListener('click', function(){
    const table = th.closest('table'), col = Array.from(th.parentNode.children).indexOf(th);
    const rows = Array.from(table.tBodies[0].rows), dir = th.dataset.dir === 'asc' ? -1 : 1;
    th.dataset.dir = dir === 1 ? 'asc' : 'desc';
    rows.sort(function(a, b){
      const x = a.cells[col].dataset.v || a.cells[col].textContent, y = b.cells[col].dataset.v || b.cells[col].textContent;
      const nx = parseFloat(x), ny = parseFloat(y);
      return dir * (isNaN(nx) || isNaN(ny) ? x.localeCompare(y) : nx - ny);
    });
    rows.forEach(r => table.tBodies[0].appendChild(r));
  });
});
// confusion cells: click shows that cell's photos
if (data.cells) {
  const shown = document.getElementById('cell-photos');
  document.querySelectorAll('td.cell').forEach(function(td){
    td.addEventListener('click', function(){
      const t = +td.dataset.t, p = +td.dataset.p, rows = data.cells[t + ',' + p] || [];
      shown.dataset.cell = t + ',' + p;
      shown.innerHTML = '<p>' + rows.length + ' photos: true ' + esc(data.classes[t]) + ', predicted ' +
        esc(data.classes[p]) + '</p><div class="photos">' +
        rows.map(r => photo(r[0], (r[1]).toFixed(3))).join('') + '</div>';
    });
  });
}
// the map
if (data.map) {
  const m = data.map, n = m.x.length, canvas = document.getElementById('map'), ctx = canvas.getContext('2d');
  const W = canvas.width, H = canvas.height, pad = 10;
  let x0 = Infinity, x1 = -Infinity, y0 = Infinity, y1 = -Infinity;
  for (let i = 0; i < n; i++) { x0 = Math.min(x0, m.x[i]); x1 = Math.max(x1, m.x[i]); y0 = Math.min(y0, m.y[i]); y1 = Math.max(y1, m.y[i]); }
  const sx = (W - 2*pad) / ((x1 - x0) || 1), sy = (H - 2*pad) / ((y1 - y0) || 1);
  const px = new Float32Array(n), py = new Float32Array(n);
  for (let i = 0; i < n; i++) { px[i] = pad + (m.x[i] - x0) * sx; py[i] = H - pad - (m.y[i] - y0) * sy; }
  // a grid of cells for hover lookup: no scan of every point per mouse move
  const G = 64, grid = new Map();
  for (let i = 0; i < n; i++) { const k = Math.floor(px[i] / W * G) * G + Math.floor(py[i] / H * G);
    if (!grid.has(k)) grid.set(k, []); grid.get(k).push(i); }
  const select = document.getElementById('colouring'), legend = document.getElementById('legend');
  function draw(){
    const c = m.colourings[select.value]; report.colouring = select.value;
    ctx.clearRect(0, 0, W, H);
    const size = n > 20000 ? 2 : 4, half = size / 2;
    let drawn = 0;
    for (let i = 0; i < n; i++) { ctx.fillStyle = palette[c.index[i] % palette.length];
      ctx.fillRect(px[i] - half, py[i] - half, size, size); drawn++; }
    report.pointsDrawn = drawn;
    legend.innerHTML = c.legend.map((name, j) => '<span><i style="background:' + palette[j % palette.length] +
      '"></i>' + esc(name) + '</span>').join('');
  }
  select.addEventListener('change', draw);
  report.pointAt = i => [px[i] * canvas.clientWidth / W, py[i] * canvas.clientHeight / H];  // CSS pixels, for tests
  report.embeddedRows = Object.keys(m.thumbs).map(Number);
  function nearestPoint(ev){
    const r = canvas.getBoundingClientRect(), mx = (ev.clientX - r.left) * W / r.width, my = (ev.clientY - r.top) * H / r.height;
    const gx = Math.floor(mx / W * G), gy = Math.floor(my / H * G);
    let best = -1, bd = 64;
    for (let a = gx - 1; a <= gx + 1; a++) for (let b = gy - 1; b <= gy + 1; b++) {
      for (const i of (grid.get(a * G + b) || [])) { const d = (px[i]-mx)**2 + (py[i]-my)**2; if (d < bd) { bd = d; best = i; } } }
    return best;
  }
  const tip = document.getElementById('tip');
  canvas.addEventListener('mousemove', function(ev){
    const i = nearestPoint(ev);
    if (i < 0) { tip.style.display = 'none'; report.hovered = null; return; }
    const c = m.colourings[select.value];
    tip.innerHTML = (m.thumbs[i] ? '<img src="' + m.thumbs[i] + '" alt="">' : '<span class="nothumb">photo not embedded</span>') +
      esc(m.paths[i]) + '<br>' + esc(c.legend[c.index[i]]);
    tip.style.display = 'block'; tip.style.left = (ev.pageX + 12) + 'px'; tip.style.top = (ev.pageY + 12) + 'px';
    report.hovered = i;
  });
  canvas.addEventListener('mouseleave', () => { tip.style.display = 'none'; });
  canvas.addEventListener('click', function(ev){
    const i = nearestPoint(ev), out = document.getElementById('neighbours');
    if (i < 0) return;
    const near = m.neighbours[i];
    out.dataset.row = i;
    out.innerHTML = '<p>' + esc(m.paths[i]) + (near ? ': nearest by cosine in the codes' : ': neighbours are listed for the embedded photos only') +
      '</p><div class="photos">' + photo(i, 'clicked') + (near || []).map(nb => photo(nb[0], nb[1].toFixed(3))).join('') + '</div>';
  });
  draw();
}
report.readyAt = performance.now();
report.ready = true;
})();
""".replace("%PALETTE%", json.dumps(PALETTE))


def map_section(payload_map) -> str:
    options = "".join(f'<option value="{html.escape(name)}">{html.escape(name)}</option>'
                      for name in payload_map["colourings"])
    n = len(payload_map["x"])
    return (f'<h2>Map of the codes</h2><p class="muted">{n:,} photos; {html.escape(payload_map["how"])}. '
            f'Hover a point for its photo and path, click it for its nearest photos by cosine in the codes (not '
            f'on the map). Photos embedded: {payload_map["embedded"]:,} (the flagged ones and a seeded sample; '
            f'at most {THUMBNAILS:,}).</p>'
            f'<label>colour by <select id="colouring">{options}</select></label> <span id="legend" class="legend">'
            f'</span><br><canvas id="map" width="900" height="600"></canvas><div id="tip"></div>'
            f'<div id="neighbours"></div>')
