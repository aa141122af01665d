"""Editing backends. Import each from its module; the diffusers one needs the ``[diffusers]`` extra."""
