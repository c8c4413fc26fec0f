"""Run from a checkout without installing: use the source next to this directory when
vt_ws is not installed (an installed vt_ws, e.g. from the wheel, wins)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

if importlib.util.find_spec("vt_ws") is None:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
