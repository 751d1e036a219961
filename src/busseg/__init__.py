"""busseg: semi-supervised breast-ultrasound lesion segmentation (arXiv 2603.06167)."""
from __future__ import annotations

__version__ = "0.1.0"
