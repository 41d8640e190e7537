"""icefall_ext: recipes and library for multilingual and semi-supervised ASR.

See ``README.md`` for the quick start and ``egs/<corpus>/run.sh`` for recipes.
"""

__version__ = "0.1.0"
