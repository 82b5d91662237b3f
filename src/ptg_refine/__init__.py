"""ptg_refine: boost any image-restoration network with priors from pre-trained models.

>>> from ptg_refine import PTGRefiner, refine
>>> refiner = PTGRefiner(encoder="stats")          # or PTGRefiner.from_pretrained("org/repo")
>>> model = refine(my_net, refiner)                # doctest: +SKIP
"""

from .encoders import Encoder, create_encoder, list_encoders, register_encoder
from .errors import PTGError
from .pretrained import list_pretrained
from .refiner import PTGRefiner, RefinerConfig
from .wrap import RefinedModel, RefineOutput, feature_channels, refine

__version__ = "0.1.0"

__all__ = [
    "Encoder",
    "PTGError",
    "PTGRefiner",
    "RefineOutput",
    "RefinedModel",
    "RefinerConfig",
    "__version__",
    "create_encoder",
    "feature_channels",
    "list_encoders",
    "list_pretrained",
    "refine",
    "register_encoder",
]
