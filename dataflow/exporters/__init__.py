"""Training-ready datasets out of a run: Hugging Face parquet, WebDataset tars, and trainers' layouts.

``export(path, format, out)`` reads a run's output file (plain, scored or filtered) one row at a time and writes
one example per edited image. One small writer class per format, as datatrove's writers:

- ``hf`` (``HFWriter``): ``data/train-*.parquet`` with ``datasets`` ``Image`` features, plus a dataset card.
- ``webdataset`` (``WebDatasetWriter``): ``train-000000.tar`` shards of ``source.png``/``edited.png``/``txt``/``json``.
- ``ip2p`` (``IP2PWriter``): parquet with diffusers InstructPix2Pix's ``input_image``/``edit_prompt``/``edited_image``.
- ``ai-toolkit`` (``AIToolkitWriter``): ``targets/NAME.png`` + ``NAME.txt`` and ``control/NAME.png``.
"""

from dataflow.exporters.exporter import FORMATS, WRITERS, ExportSummary, export

__all__ = ["FORMATS", "WRITERS", "ExportSummary", "export"]
