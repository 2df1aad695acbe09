"""Configuration: the schema with its defaults and environment overrides (:mod:`.schema`), and the typed sections
library functions take (:mod:`.settings`). The lowest layer: it imports nothing else of the package."""
from .schema import ConfigError, validate_config
from .settings import Settings, load_settings

__all__ = ["ConfigError", "Settings", "load_settings", "validate_config"]
