"""Settings from the environment (and a local ``.env``), validated once."""

from config.settings import Settings, SettingsError, get_settings

__all__ = ["Settings", "SettingsError", "get_settings"]
