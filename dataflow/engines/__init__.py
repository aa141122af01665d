"""Engines run an edit job: in this process (``local``), and later over several processes or a Ray cluster."""
