"""``APIImageGenServing``: DataFlow-MM's documented API serving, kept as a thin layer over ``APIEditServing``.

Only the documented keyword names live here; they are translated once into the clean core's arguments.
"""

from __future__ import annotations

import os
from typing import Any, Optional

from dataflow.core.errors import InputError
from dataflow.core.validation import check_positive_int
from dataflow.serving.api.serving import KEY_VARIABLE, APIEditServing

SUPPORTED_TASKS = ("imageedit",)


class APIImageGenServing(APIEditServing):
    """Image editing by a remote API, under DataFlow-MM's argument names.

    Args:
        api_url: the API root: ``https://api.openai.com/v1``, a self-hosted OpenAI-compatible server
            (``http://host:8000`` or ``.../v1``), or ``https://generativelanguage.googleapis.com`` (Gemini).
            Default: the format's official URL.
        image_io: an ``ImageIO`` whose ``save_path`` receives the edited images.
        Image_gen_task: only "imageedit" is supported.
        batch_size: accepted for compatibility and checked, but each row is its own request: how many run at
            once is ``max_concurrency``.
        timeout, connect_timeout: seconds to wait for an answer and for a connection.
        api_format: "openai" or "gemini".
        api_key: the key; default the ``DF_API_KEY`` environment variable; none sent when both are empty.
        model_name: default ``gpt-image-2.5-sunburst`` (openai) or ``gemini-2.5-flash-image`` (gemini).
        max_concurrency, max_retries, num_images_per_prompt, size, quality, input_fidelity, background,
            aspect_ratio, image_size, multi_turn, extra_body, retry_delay: as in ``APIEditServing``.
    """

    def __init__(
        self,
        api_url: Optional[str] = None,
        image_io: Any = None,
        Image_gen_task: str = "imageedit",
        batch_size: int = 4,
        timeout: float = 300,
        connect_timeout: float = 30,
        api_format: str = "openai",
        api_key: Optional[str] = None,
        model_name: Optional[str] = None,
        *,
        max_concurrency: int = 8,
        max_retries: int = 5,
        num_images_per_prompt: int = 1,
        size: Optional[str] = None,
        quality: Optional[str] = None,
        input_fidelity: Optional[str] = None,
        background: Optional[str] = None,
        aspect_ratio: Optional[str] = None,
        image_size: Optional[str] = None,
        multi_turn: bool = False,
        extra_body: Optional[dict] = None,
        retry_delay: float = 1.0,
    ):
        if Image_gen_task not in SUPPORTED_TASKS:
            raise InputError(
                f"Image_gen_task={Image_gen_task!r} is not supported yet; supported: {', '.join(SUPPORTED_TASKS)}"
            )
        check_positive_int(batch_size=batch_size)
        super().__init__(
            api_format,
            api_url,
            model_name,
            os.environ.get(KEY_VARIABLE) if api_key is None else api_key,
            num_images_per_prompt=num_images_per_prompt,
            size=size,
            quality=quality,
            input_fidelity=input_fidelity,
            background=background,
            aspect_ratio=aspect_ratio,
            image_size=image_size,
            multi_turn=multi_turn,
            extra_body=extra_body,
            max_concurrency=max_concurrency,
            max_retries=max_retries,
            timeout=timeout,
            connect_timeout=connect_timeout,
            retry_delay=retry_delay,
            image_io=image_io,
        )
