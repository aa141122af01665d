"""Human-readable reports of a finished run (``from dataflow.reports import build_gallery``)."""

from dataflow.reports.gallery import build_gallery, build_gallery_from_manifest

__all__ = ["build_gallery", "build_gallery_from_manifest"]
