"""Editing through remote APIs: OpenAI's ``/images/edits`` (and compatible servers) and Gemini.

The HTTP layer every remote call shares (retries, ``Retry-After``, error classes, key hygiene) is
``dataflow.http``; ``openai_format`` and ``gemini_format`` are the request shapes; ``upload`` decides the bytes an
image is sent as (its own file when the service takes it); ``sizes`` chooses an output size or aspect ratio from
the first image; ``serving`` is ``APIEditServing``; ``flags`` adds the command-line options. Needs the ``[api]``
extra (httpx).
"""

from dataflow.serving.api.serving import APIEditServing

__all__ = ["APIEditServing"]
