"""vtund.conf: parse (:func:`parse_config`, :func:`load_config`) into typed objects and
check against the installed plugins (:func:`check_config`)."""

from vtcore.config.check import check_config
from vtcore.config.errors import ConfigError, ConfigErrors
from vtcore.config.model import Addr, Command, Config, Host, Options
from vtcore.config.parser import load_config, parse_config

__all__ = [
    "Addr",
    "Command",
    "Config",
    "ConfigError",
    "ConfigErrors",
    "Host",
    "Options",
    "check_config",
    "load_config",
    "parse_config",
]
