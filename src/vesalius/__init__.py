"""Vesalius: a research PACS with the subject's research record beside the images."""

__version__ = "0.1.0"
