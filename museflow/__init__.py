"""museflow: multi-tenant Score-as-a-Service on Kafka."""

from museflow.config import Settings
from museflow.errors import MuseflowError

__all__ = ["MuseflowError", "Settings", "__version__"]

__version__ = "0.1.0"
