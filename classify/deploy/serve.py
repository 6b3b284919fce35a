"""A small HTTP service for an exported model: aiohttp, one process, ONNX Runtime, no torch.

    POST /predict   the image file as the body (Content-Type image/*) or a multipart form field
                    "image"; ?top_k=K. 200 {label, probability, top_k: [{label, probability}]}.
    POST /similar   the same upload; ?k=K (default 12). With ``similar=CACHE`` (serve --similar):
                    200 {neighbours: [{row, path, label, split, score}], k, layer, cache, search},
                    the k rows of the cache nearest by cosine, nearest first; without one, 404.
    GET  /health    200 {status, model, classes, backbone, layer, batches, requests[, similar]}

Requests that arrive together are run as one batch: each decoded image joins a queue, and one
worker task takes whatever is waiting (up to ``max_batch``, after at most ``max_wait_ms``) through
the session in a thread, so the event loop keeps accepting while the network runs. Decoding runs
in a thread pool too. A bad upload is a 4xx with a one-line reason (415 for a body that is not an
image type, 413 beyond ``max_bytes``, 400 for bytes no decoder reads) and the service goes on.

/similar: the graph's second output is the codes its head reads (the model's layer, rounded as the
cache stores them), so one session run gives /predict's probabilities and /similar's codes, and
both kinds of request batch together. Their searches batch the same way, in a thread of their own:
the queries waiting go to the cosine engine (classify/cosine.py) as one call, so an exact search
reads the cache once for all of them. The cache's faiss index (classify/index.py), when it has one
for the layer, is opened once and searched in memory (what nearest_in_cache does, without loading
the index again per request), opened again only when `cnncodes index` commits a new one; rows
committed after it are searched exactly (the index keeps itself in step). Without an index, the
engine's exact top_k runs over blocks read from a reader held open on the cache's current version
(reopened when a commit renames a new version into place), which also names the answer's rows
(path, label, split): only the answer's paths are read. At start, a cache whose backbone, weights
or preprocessing differ from the model's, that lacks the model's layer, or a graph exported before
it had a codes output, is refused in one line saying what to do.
"""
import asyncio
import functools
import json
import os
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from aiohttp import web

from .onnx_predict import OnnxModel

MAX_BYTES = 20 * 2**20
IMAGE_TYPES = ("image/", "application/octet-stream")
SIMILAR_K, MAX_K = 12, 1000
BATCHER, SEARCHER = web.AppKey("batcher", object), web.AppKey("searcher", object)
# the fingerprint's fields that make two extractors' codes different (layers are checked by name;
# the storage dtype and the views recipe change no row's meaning)
SIMILAR_KEYS = ("backbone", "weights", "preprocess", "quantization")


def _error(status, reason):
    return web.json_response({"error": reason}, status=status)


class Gathered:
    """Items in, one answer each, worked through ``work(items) -> answers`` in a thread of its own, in
    batches of whatever arrived together (up to ``max_batch``, after at most ``max_wait_ms``)."""

    def __init__(self, work, max_batch=32, max_wait_ms=5.0, name="batch"):
        self.work, self.max_batch, self.max_wait = work, max_batch, max_wait_ms / 1000
        self.queue = asyncio.Queue()
        self.batches = self.images = 0
        self.session_thread = ThreadPoolExecutor(1, thread_name_prefix=name)
        self.task = None

    def start(self):
        self.task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self):
        if self.task:
            self.task.cancel()
        self.session_thread.shutdown(wait=False)

    async def submit(self, item):
        future = asyncio.get_running_loop().create_future()
        await self.queue.put((item, future))
        return await future

    async def _run(self):
        loop = asyncio.get_running_loop()
        while True:
            waiting = [await self.queue.get()]
            deadline = loop.time() + self.max_wait
            while len(waiting) < self.max_batch:
                timeout = deadline - loop.time()
                if timeout <= 0:
                    break
                try:
                    waiting.append(await asyncio.wait_for(self.queue.get(), timeout))
                except asyncio.TimeoutError:
                    break
            try:
                answers = await loop.run_in_executor(self.session_thread, self.work, [item for item, _ in waiting])
            except Exception as exc:  # the batch failed: every waiting request hears why
                for _, future in waiting:
                    if not future.done():
                        future.set_exception(exc)
                continue
            self.batches += 1
            self.images += len(waiting)
            for (_, future), answer in zip(waiting, answers):
                if not future.done():
                    future.set_result(answer)


class Batcher(Gathered):
    """Prepared images in, (probabilities, codes or None) out, one session run per batch."""

    def __init__(self, model: OnnxModel, max_batch=32, max_wait_ms=5.0):
        super().__init__(self._forward, max_batch, max_wait_ms, name="onnx")
        self.model = model

    def _forward(self, arrays):
        proba, codes = self.model.predict_with_codes(np.stack(arrays))
        return list(zip(proba, codes if codes is not None else [None] * len(proba)))

    async def predict(self, array) -> tuple:
        """(probabilities [K], codes [D] or None) of one prepared image."""
        return await self.submit(array)


def _layer_of(model: OnnxModel) -> str:
    """The model's layer as a cache names it ("a+b" for layers side by side)."""
    return "+".join(p.strip() for p in str(model.meta.get("layer", "")).replace(",", "+").split("+") if p.strip())


def _same(value):
    return json.loads(json.dumps(value, sort_keys=True, default=str)) if value else None


class CacheSearch:
    """A codes cache searched with a model's codes: checked against the model at start, then
    ``answer(queries)`` for (codes, k) pairs, each ([{row, path, label, split, score}] nearest first,
    how it was searched).
    Runs in one thread (the search's Gathered)."""

    def __init__(self, cache_path, model: OnnxModel, model_path, max_memory=None):
        from ...cache import open_cache
        from ..budget import memory_budget
        from ..errors import ClassifyError
        self.cache = os.fspath(cache_path)
        self.layer = _layer_of(model)
        again = f"export it again: `cnncodes export-model MODEL.npz --out {model_path}`"
        if model.codes_output is None or "fingerprint" not in model.meta:
            raise ClassifyError(f"{model_path}: exported before the graph had a codes output, so similar= cannot "
                                f"search with it; {again}")
        theirs = json.loads(model.meta["fingerprint"])
        with open_cache(self.cache) as c:
            ours, layers = c.fingerprint, list(c.layers)
            width = c.width(self.layer) if all(n in layers for n in self.layer.split("+")) else None
        differ = [key for key in SIMILAR_KEYS if _same(ours.value(key)) != _same(theirs.get(key))]
        if differ:
            said = "; ".join(f"{key}: cache {_said(ours.value(key))}, model {_said(theirs.get(key))}" for key in differ)
            raise ClassifyError(f"{self.cache}: its codes come from another extractor than {model_path}'s ({said}); "
                                "give similar= a cache extracted with the model's backbone, weights and preprocessing "
                                "(`cnncodes info` shows both), or export a model fitted on this cache")
        if width is None:
            raise ClassifyError(f"{self.cache}: no layer {self.layer} (it has {', '.join(layers)}), the layer "
                                f"{model_path} was fitted on; extract it into this cache: `cnncodes extract DATA "
                                f"--cache {self.cache} --layer {self.layer.replace('+', ',')}`")
        shape = next(o.shape for o in model.session.get_outputs() if o.name == model.codes_output)
        if len(shape) == 2 and isinstance(shape[1], int) and shape[1] != width:
            raise ClassifyError(f"{self.cache}: layer {self.layer} has {width} numbers a row, {model_path}'s codes "
                                f"{shape[1]}; {again}")
        self.budget = memory_budget(max_memory)
        self.searches = 0
        self._index, self._index_stamp = None, None
        self._reader, self._version = None, None

    def _manifest_stamp(self):
        from ..index import index_folder
        try:
            s = os.stat(os.path.join(index_folder(self.cache), f"{self.layer}.json"))
        except OSError:
            return None
        return s.st_ino, s.st_mtime_ns, s.st_size

    def _search(self, queries, k, reader) -> tuple:
        """(rows, scores, how): through the index held (opened again when a new one is committed),
        else the cosine engine's exact top_k over the rows ``reader`` holds."""
        from ..cosine import top_k
        from ..index import open_index
        stamp = self._manifest_stamp()
        if stamp != self._index_stamp:
            self._index, self._index_stamp = None, stamp
            if stamp is not None:
                try:
                    self._index = open_index(self.cache, self.layer)
                except Exception:  # noqa: BLE001  (a build replacing it right now: exact, and try again next time)
                    self._index_stamp = None
        if self._index is not None:
            rows, scores = self._index.search(queries, k, budget_bytes=self.budget)
            return rows, scores, self._index.kind
        rows, scores = top_k(queries, self._blocks(reader, len(queries)), k)
        return rows, scores, "exact"

    def _blocks(self, reader, n_queries):
        """(rows, codes float32) of every row of the layer, a block at a time within the budget (the
        engine's block rule), read from the held reader: the rows searched are the rows named. The
        stored float16 becomes float32 in numpy (the streamed loads of classify/stream.py convert
        through torch, which this process never imports)."""
        from ..cosine import block_rows
        dsets, width, n = reader.datasets(self.layer), reader.width(self.layer), len(reader)
        step = block_rows(n_queries, width, self.budget)
        for start in range(0, n, step):
            stop = min(n, start + step)
            codes = np.empty((stop - start, width), dtype=np.float32)
            reader.read_rows_into(codes, 0, dsets, start, np.ones(stop - start, dtype=bool))
            yield np.arange(start, stop), codes

    def _open_reader(self):
        """A reader of the cache's current version (held while it stays current)."""
        from ...cache import open_cache
        from ..index import cache_version
        version = cache_version(self.cache)
        if self._reader is None or version != self._version:
            self.close()
            self._reader, self._version = open_cache(self.cache), version
        return self._reader

    def answer(self, queries) -> list:
        """[(codes [D], k)] -> for each, (its neighbours [{row, path, label, split, score}] nearest first,
        "exact" or the index's kind)."""
        from ...cache.schema import UNLABELED
        from ..index import cache_version
        Q = np.stack([codes for codes, _ in queries]).astype(np.float32)
        k = max(want for _, want in queries)
        for _ in range(3):  # a commit during an index search (which maps to the newest rows): again
            reader = self._open_reader()
            rows, scores, how = self._search(Q, k, reader)
            if how == "exact" or cache_version(self.cache) == self._version:
                break
        self.searches += len(queries)
        found = sorted({int(r) for r in rows.ravel() if r >= 0})
        paths = dict(zip(found, reader.paths_of(np.array(found, dtype=np.int64))))
        out = []
        for (_, want), row_list, score_list in zip(queries, rows, scores):
            out.append(([{"row": int(r), "path": paths[int(r)],
                          "label": None if reader.labels[r] == UNLABELED else reader.class_names[int(reader.labels[r])],
                          "split": str(reader.splits[r]), "score": round(float(s), 6)}
                         for r, s in zip(row_list[:want], score_list[:want]) if r >= 0], how))
        return out

    def health(self) -> dict:
        return {"cache": self.cache, "layer": self.layer, "searches": self.searches,
                "index": self._index.kind if self._index is not None else None}

    def close(self):
        if self._reader is not None:
            self._reader.close()
            self._reader = None


def _said(value) -> str:
    return json.dumps(value, sort_keys=True, default=str) if isinstance(value, (dict, list)) else str(value)


async def _read_upload(request, max_bytes):
    """(bytes, None) or (None, error response)."""
    if request.content_length is not None and request.content_length > max_bytes:
        return None, _error(413, f"upload of {request.content_length:,} bytes, more than {max_bytes:,}")
    kind = request.content_type or ""
    if kind.startswith("multipart/"):
        reader = await request.multipart()
        async for part in reader:
            if part.name == "image":
                data = bytes(await part.read(decode=False))
                if len(data) > max_bytes:
                    return None, _error(413, f"upload of {len(data):,} bytes, more than {max_bytes:,}")
                return data, None
        return None, _error(400, 'multipart upload without an "image" field')
    if not kind.startswith(IMAGE_TYPES):
        return None, _error(415, f"Content-Type {kind or 'missing'}: send the image file's bytes as image/* "
                                 "(or a multipart form with an \"image\" field)")
    return await request.read(), None


def make_app(model_path, max_batch=32, max_wait_ms=5.0, max_bytes=MAX_BYTES, decode_threads=4,
             similar=None, max_memory=None) -> web.Application:
    """The service; ``similar``: a codes cache of the model's extractor that POST /similar searches."""
    model = OnnxModel(model_path)
    search = CacheSearch(similar, model, model_path, max_memory) if similar is not None else None
    batcher = Batcher(model, max_batch, max_wait_ms)
    searcher = Gathered(search.answer, max_batch, max_wait_ms, name="search") if search is not None else None
    decoders = ThreadPoolExecutor(decode_threads, thread_name_prefix="decode")
    started = time.time()

    async def prepared(request):
        """(uint8 image array, None) of the request's upload, or (None, a 4xx response)."""
        from ...extract.decoding import DecodeError

        from ..errors import ClassifyError
        try:
            data, error = await _read_upload(request, max_bytes)
        except web.HTTPRequestEntityTooLarge:
            return None, _error(413, f"upload larger than {max_bytes:,} bytes")
        if error is not None:
            return None, error
        if not data:
            return None, _error(400, "empty upload: send the image file's bytes")
        try:
            return await asyncio.get_running_loop().run_in_executor(decoders, model.prepare, data), None
        except (DecodeError, ClassifyError) as exc:
            return None, _error(400, f"not a usable image: {exc}")

    async def predict(request):
        try:
            top_k = int(request.query.get("top_k", 3))
        except ValueError:
            return _error(400, "top_k must be a whole number")
        array, error = await prepared(request)
        if error is not None:
            return error
        row, _ = await batcher.predict(array)
        top = model.top_k(row, top_k)
        return web.json_response({"label": top[0]["label"], "probability": top[0]["probability"], "top_k": top})

    async def similar_(request):
        from ...cache.errors import CacheError

        from ..errors import ClassifyError
        if search is None:
            return _error(404, "this service searches no cache; start it with `cnncodes serve "
                               f"{model_path} --similar CACHE.h5` (a cache of the model's extractor)")
        if "text" in request.query:
            return _error(400, "text queries need the open_clip text tower, which the exported graph does not "
                               f"carry; search by text with `cnncodes similar {search.cache} --text PHRASE`")
        try:
            k = int(request.query.get("k", SIMILAR_K))
        except ValueError:
            k = 0
        if not 1 <= k <= MAX_K:
            return _error(400, f"k must be a whole number from 1 to {MAX_K}")
        array, error = await prepared(request)
        if error is not None:
            return error
        _, codes = await batcher.predict(array)
        try:
            neighbours, how = await searcher.submit((codes, k))
        except (CacheError, ClassifyError, OSError) as exc:  # the cache went away or was damaged while serving
            return _error(503, f"the cache cannot be searched now: {str(exc).splitlines()[0]}")
        return web.json_response({"neighbours": neighbours, "k": k, "layer": search.layer, "cache": search.cache,
                                  "search": how})

    async def health(request):
        out = {"status": "ok", "model": model_path, "classes": model.class_names,
               "backbone": model.meta.get("backbone"), "layer": model.meta.get("layer"),
               "batches": batcher.batches, "requests": batcher.images, "uptime_s": round(time.time() - started, 1)}
        if search is not None:
            out["similar"] = search.health()
        return web.json_response(out)

    async def on_startup(app):
        batcher.start()
        if searcher is not None:
            searcher.start()

    async def on_cleanup(app):
        await batcher.stop()
        if searcher is not None:
            await searcher.stop()
            search.close()
        decoders.shutdown(wait=False)

    app = web.Application(client_max_size=max_bytes)
    app.add_routes([web.post("/predict", predict), web.post("/similar", similar_), web.get("/health", health)])
    app.on_startup.append(on_startup)
    app.on_cleanup.append(on_cleanup)
    app[BATCHER] = batcher
    app[SEARCHER] = searcher
    return app


def serve(model_path, host="127.0.0.1", port=8080, **options):
    """Run the service until interrupted (aiohttp's own runner prints where it listens)."""
    web.run_app(make_app(model_path, **options), host=host, port=port, print=functools.partial(print, flush=True))
