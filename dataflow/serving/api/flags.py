"""The API backend's command-line options, for ``dataflow-edit run --backend api`` and the API pipeline script.

``add_api_flags`` adds them (``--api-format`` for the CLI, ``--api_format`` with ``separator="_"``);
``api_serving_from_flags`` builds the serving from the parsed values. The key is read from ``DF_API_KEY`` only,
never from a flag (flags end up in shell history and process lists). Without a key nothing is sent, which is
what self-hosted servers usually want; a server that needs one answers 401 and the run stops at once, saying so.
"""

from __future__ import annotations

import argparse
import json
import os
from typing import Any

from dataflow.core.flags import flag_adder
from dataflow.serving.api.gemini_format import ASPECT_RATIOS, IMAGE_SIZES
from dataflow.serving.api.openai_format import BACKGROUNDS, INPUT_FIDELITIES, QUALITIES, STANDARD_SIZES
from dataflow.serving.api.serving import FORMATS, KEY_VARIABLE, APIEditServing
from dataflow.serving.api.sizes import MATCH_INPUT

URL_VARIABLE = "DF_BASE_URL"


def json_object(text: str) -> dict:
    """argparse type: a JSON object given on the command line."""
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not valid JSON ({exc}): {text!r}") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(f"must be a JSON object such as '{{\"seed\": 1}}', got {text!r}")
    return value


def add_api_flags(parser: Any, separator: str = "-") -> None:
    """The API options; ``--model``, the images per row, the seed and the batch size are the caller's own."""
    add = flag_adder(parser, separator)
    add("api_format", choices=sorted(FORMATS), default="openai",
        help="openai: POST {base}/images/edits (OpenAI, vLLM-omni, SGLang); gemini: generateContent")
    add("api_url", default=None,
        help=f"API root (default: ${URL_VARIABLE}, else the format's official URL); /v1 is added to an OpenAI "
             "URL without one")
    add("max_concurrency", type=int, default=8, help="requests in flight at once")
    add("max_retries", type=int, default=5, help="retries after 429, 5xx, timeouts and lost connections")
    add("timeout", type=float, default=300, help="seconds to wait for an answer")
    add("connect_timeout", type=float, default=30, help="seconds to wait for a connection")
    add("size", default=None,
        help=f"openai: auto, WIDTHxHEIGHT ({', '.join(STANDARD_SIZES)}; the 2.x models take others) or "
             f"{MATCH_INPUT}: the standard size nearest each row's first image (default: not sent, auto)")
    add("quality", default=None, choices=QUALITIES, help="openai: the quality (xhigh, max: gpt-image-2.5 models)")
    add("input_fidelity", default=None, choices=INPUT_FIDELITIES,
        help="openai: how closely edits keep the input's features, e.g. faces (gpt-image-1.5, -1-mini)")
    add("background", default=None, choices=BACKGROUNDS,
        help="openai: transparent keeps an alpha channel in the saved PNG")
    add("aspect_ratio", default=None, choices=(*ASPECT_RATIOS, MATCH_INPUT),
        help=f"gemini: imageConfig.aspectRatio; {MATCH_INPUT}: the one nearest each row's first image")
    add("image_size", default=None, choices=(*IMAGE_SIZES, MATCH_INPUT),
        help=f"gemini: imageConfig.imageSize; {MATCH_INPUT}: the one nearest each row's first image's long side")
    add("multi_turn", action="store_true",
        help="gemini: edit a row's user turns one after another, each turn's image feeding the next")
    add("extra_body", type=json_object, default=None,
        help="JSON object of extra fields for the server, e.g. '{\"num_inference_steps\": 30, \"seed\": 7}' "
             "(a seed is derived per row)")


GENERATION_OPTIONS = ("size", "quality", "input_fidelity", "background", "aspect_ratio", "image_size", "multi_turn",
                      "extra_body", "max_concurrency", "max_retries", "timeout", "connect_timeout")


def api_options(args: argparse.Namespace) -> dict:
    """The serving's keyword arguments ``add_api_flags``'s options give (the same for the CLI and the script)."""
    return {name: getattr(args, name) for name in GENERATION_OPTIONS}


def api_serving_from_flags(args: argparse.Namespace, image_io: Any) -> APIEditServing:
    """The serving ``add_api_flags``'s options ask for, with ``args.model`` and ``args.images_per_prompt``."""
    return APIEditServing(
        args.api_format,
        args.api_url or os.environ.get(URL_VARIABLE) or None,
        getattr(args, "model", None),
        os.environ.get(KEY_VARIABLE) or None,
        num_images_per_prompt=getattr(args, "images_per_prompt", 1),
        image_io=image_io,
        **api_options(args),
    )
