"""Model archives made the way TorchServe's examples make them, built in the test (fixed random
weights, nothing downloaded): ``torch-model-archiver`` with the stock ``image_classifier``
handler and a torchvision model, eager (``--model-file model.py --serialized-file weights.pth``)
and TorchScript (``--serialized-file model.pt``); a user handler not based on BaseHandler; and
the broken archives a user can bring."""

from tests.archives._build import (
    ECHO_HANDLER,
    MODEL_PY,
    archiver,
    broken_handler_archive,
    echo_archive,
    garbage_weights_archive,
    vision_archive,
    write_vision_model,
)

__all__ = [
    "ECHO_HANDLER",
    "MODEL_PY",
    "archiver",
    "broken_handler_archive",
    "echo_archive",
    "garbage_weights_archive",
    "vision_archive",
    "write_vision_model",
]
