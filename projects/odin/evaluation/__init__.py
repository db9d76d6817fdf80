"""ODIN evaluation: ScanNet-protocol instance AP and semantic mIoU, benchmark export."""
from .metrics import *  # noqa: F401,F403
