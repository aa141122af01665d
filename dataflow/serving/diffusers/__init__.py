"""Instruction-based editing with diffusers pipelines: one shared serving, one small adapter per model family.

    FLUX-Kontext      FluxKontextPipeline                                  (flux_kontext.py)
    Qwen-Image-Edit   QwenImageEditPipeline, QwenImageEditPlusPipeline     (qwen_image_edit.py)
    FLUX.2            Flux2Pipeline, Flux2KleinPipeline, Flux2KleinKVPipeline (flux2.py)

``DiffusersEditServing`` (serving.py) does what every family shares; ``diffusers_serving`` (select.py) builds it
for a model folder or Hub id, with the family read from the folder's ``model_index.json``. ``speed/`` holds the
speed and memory options (``Acceleration``) and what applies them to a pipeline.
"""
