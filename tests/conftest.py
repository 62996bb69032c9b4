"""Tests run from the repository root (relative config paths) with a small torch thread count."""
import os
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
os.chdir(ROOT)
sys.path.insert(0, str(Path(__file__).resolve().parent))  # tests/helpers_*.py
torch.set_num_threads(min(2, torch.get_num_threads()))
