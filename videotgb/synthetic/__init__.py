"""The synthetic long-video grounding benchmark (docs/synthetic.md): videos the package generates itself, with
questions about short motion events, their gold answers and true spans, in splits, as plain files, a JSON index and
training shards.

Not remote code: the model, processor and video files never import this package.
"""

from . import generator
from .generator import *  # noqa: F403 (the public names are the generator's)

__all__ = generator.__all__
