"""The plugin contract, re-exported from :mod:`vt_api` (its home since vt-api 1.0) so that
``from vtcore.api import ...`` in existing plugins keeps working."""

from vt_api import *  # noqa: F403
from vt_api import __all__  # noqa: F401
