"""Test-time random-weight stand-ins for torch-fidelity's downloaded extractors (metrics-protocols.md §7).

Nothing here is committed weights: files are written to a caller-given temporary folder at test time.
"""

import warnings
from pathlib import Path
from unittest import mock

import torch
import torch.nn as nn
from torch_fidelity.feature_extractor_clip import CLIPVisual
from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3


def make_random_inception_weights(folder, seed: int = 0) -> Path:
    """A state_dict for 'inception-v3-compat' with He-normal convs (default init makes '2048' vanish, ~4e-7)."""
    torch.manual_seed(seed)
    with mock.patch.object(FeatureExtractorInceptionV3, "load_state_dict", lambda self, sd: None), \
         mock.patch("torch_fidelity.feature_extractor_inceptionv3.load_state_dict_from_url", lambda *a, **k: {}):
        net = FeatureExtractorInceptionV3("inception-v3-compat", ["2048"])
    for m in net.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight)
    path = Path(folder) / "inception-random.pth"
    torch.save(net.state_dict(), path)
    return path


class _TinyCLIP(nn.Module):
    def __init__(self):
        super().__init__()
        self.visual = CLIPVisual(embed_dim=16, image_resolution=224, vision_layers=2, vision_width=64,
                                 vision_patch_size=32).visual
        self.text_projection = nn.Parameter(torch.randn(8, 16))


def make_tiny_clip(folder, seed: int = 0) -> Path:
    """A TorchScript archive torch-fidelity's CLIP loader accepts (ViT, 2 layers, width 64, 16-d embedding)."""
    torch.manual_seed(seed)
    path = Path(folder) / "tiny-clip.pt"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.jit.save(torch.jit.script(_TinyCLIP()), str(path))
    return path
