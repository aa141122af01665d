"""A fast, deterministic serving for engine tests: it inverts the image (and can fail on purpose)."""

from __future__ import annotations

from PIL import ImageOps

from dataflow.core.request import EditResult
from dataflow.core.serving import ImageEditServing


class InvertServing(ImageEditServing):
    """Inverts each reference image; ``calls`` records the keys of each batch it was given."""

    def __init__(self, batch_size=2, num_images=1, image_io=None, on_batch=None, tag="v1"):
        self.batch_size = batch_size
        self.num_images_per_request = num_images
        self.image_io = image_io
        self.on_batch = on_batch
        self.tag = tag
        self.calls = []

    def fingerprint(self):
        return {"serving": "invert", "tag": self.tag, "n": self.num_images_per_request}

    def edit(self, requests):
        if self.on_batch:
            self.on_batch(requests)
        self.calls.append([r.key for r in requests])
        return [EditResult(images=[ImageOps.invert(r.image)] * r.num_images) for r in requests]
