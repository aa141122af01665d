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


class DyingServing(InvertServing):
    """Kills its process: once, on the first batch after ``die_once_flag`` is claimed, and on every batch that
    holds the instruction ``poison``. Used to test that worker deaths lose no rows."""

    def __init__(self, die_once_flag=None, poison=None, **kwargs):
        super().__init__(**kwargs)
        self.die_once_flag = die_once_flag
        self.poison = poison

    def edit(self, requests):
        import os

        if any(r.instruction == self.poison for r in requests):
            os._exit(3)
        if self.die_once_flag:
            try:
                os.close(os.open(self.die_once_flag, os.O_CREAT | os.O_EXCL))
            except FileExistsError:
                pass
            else:
                os._exit(3)
        return super().edit(requests)
