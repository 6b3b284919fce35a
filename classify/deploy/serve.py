"""A small HTTP service for an exported model: aiohttp, one process, ONNX Runtime, no torch.

    POST /predict   the image file as the body (Content-Type image/*) or a multipart form field
                    "image"; ?top_k=K. 200 {label, probability, top_k: [{label, probability}]}.
    GET  /health    200 {status, model, classes, backbone, layer, batches, requests}

Requests that arrive together are run as one batch: each decoded image joins a queue, and one
worker task takes whatever is waiting (up to ``max_batch``, after at most ``max_wait_ms``) through
the session in a thread, so the event loop keeps accepting while the network runs. Decoding runs
in a thread pool too. A bad upload is a 4xx with a one-line reason (415 for a body that is not an
image type, 413 beyond ``max_bytes``, 400 for bytes no decoder reads) and the service goes on.
"""
import asyncio
import functools
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from aiohttp import web

from .onnx_predict import OnnxModel

MAX_BYTES = 20 * 2**20
IMAGE_TYPES = ("image/", "application/octet-stream")


def _error(status, reason):
    return web.json_response({"error": reason}, status=status)


class Batcher:
    """Prepared images in, probabilities out, in batches of whatever arrived together."""

    def __init__(self, model: OnnxModel, max_batch=32, max_wait_ms=5.0):
        self.model, self.max_batch, self.max_wait = model, max_batch, max_wait_ms / 1000
        self.queue = asyncio.Queue()
        self.batches = self.images = 0
        self.session_thread = ThreadPoolExecutor(1, thread_name_prefix="onnx")
        self.task = None

    def start(self):
        self.task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self):
        if self.task:
            self.task.cancel()
        self.session_thread.shutdown(wait=False)

    async def predict(self, array) -> np.ndarray:
        future = asyncio.get_running_loop().create_future()
        await self.queue.put((array, future))
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
            batch = np.stack([array for array, _ in waiting])
            try:
                proba = await loop.run_in_executor(self.session_thread, self.model.predict_proba, batch)
            except Exception as exc:  # the runtime failed on this batch: every waiting request hears why
                for _, future in waiting:
                    if not future.done():
                        future.set_exception(exc)
                continue
            self.batches += 1
            self.images += len(waiting)
            for (_, future), row in zip(waiting, proba):
                if not future.done():
                    future.set_result(row)


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


def make_app(model_path, max_batch=32, max_wait_ms=5.0, max_bytes=MAX_BYTES, decode_threads=4) -> web.Application:
    model = OnnxModel(model_path)
    batcher = Batcher(model, max_batch, max_wait_ms)
    decoders = ThreadPoolExecutor(decode_threads, thread_name_prefix="decode")
    started = time.time()

    async def predict(request):
        from ...extract.decoding import DecodeError

        from ..errors import ClassifyError
        try:
            top_k = int(request.query.get("top_k", 3))
        except ValueError:
            return _error(400, "top_k must be a whole number")
        try:
            data, error = await _read_upload(request, max_bytes)
        except web.HTTPRequestEntityTooLarge:
            return _error(413, f"upload larger than {max_bytes:,} bytes")
        if error is not None:
            return error
        if not data:
            return _error(400, "empty upload: send the image file's bytes")
        try:
            array = await asyncio.get_running_loop().run_in_executor(decoders, model.prepare, data)
        except (DecodeError, ClassifyError) as exc:
            return _error(400, f"not a usable image: {exc}")
        row = await batcher.predict(array)
        top = model.top_k(row, top_k)
        return web.json_response({"label": top[0]["label"], "probability": top[0]["probability"], "top_k": top})

    async def health(request):
        return web.json_response({"status": "ok", "model": model_path, "classes": model.class_names,
                                  "backbone": model.meta.get("backbone"), "layer": model.meta.get("layer"),
                                  "batches": batcher.batches, "requests": batcher.images,
                                  "uptime_s": round(time.time() - started, 1)})

    async def on_startup(app):
        batcher.start()

    async def on_cleanup(app):
        await batcher.stop()
        decoders.shutdown(wait=False)

    app = web.Application(client_max_size=max_bytes)
    app.add_routes([web.post("/predict", predict), web.get("/health", health)])
    app.on_startup.append(on_startup)
    app.on_cleanup.append(on_cleanup)
    app["batcher"] = batcher
    return app


def serve(model_path, host="127.0.0.1", port=8080, **options):
    """Run the service until interrupted (aiohttp's own runner prints where it listens)."""
    web.run_app(make_app(model_path, **options), host=host, port=port, print=functools.partial(print, flush=True))
