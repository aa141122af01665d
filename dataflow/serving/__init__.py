"""Editing backends: ``diffusers/`` (local models, with its speed kit in ``diffusers/speed/``), ``api/`` (remote
APIs) and ``classic/`` (Pillow). The modules directly in this folder are the documented entry points
(``LocalImageGenServing``, ``APIImageGenServing``, ``FluxKontextServing``, ``ClassicEditServing``, ``Acceleration``),
thin layers over those packages. The diffusers backend needs the ``[diffusers]`` extra, the API one ``[api]``.
"""
