"""Scoring and filtering edits: ``ImageEditEvaluator`` (metrics per edited image) and ``ImageEditFilter``."""
