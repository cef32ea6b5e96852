"""Silence library messages a user can do nothing about (installed on import of the package)."""

import logging
import warnings


class _DropTorchvisionHint(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        # transformers suggests installing torchvision on every CLIP load; it must stay out of the tree (README).
        return "requires torchvision" not in record.getMessage()


def quiet_library_noise() -> None:
    logging.getLogger("transformers.utils.import_utils").addFilter(_DropTorchvisionHint())
    # insightface calls a scikit-image API deprecated for removal; nothing for our users to change.
    warnings.filterwarnings("ignore", category=FutureWarning, module=r"(insightface|skimage)(\.|$)")
