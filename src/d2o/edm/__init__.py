"""EDM networks, preconditioners and losses re-implemented for D2O (see d2o.edm.networks, d2o.edm.loss)."""

from d2o.edm.networks import (  # noqa: F401
    EDM_CLASS_MAP, Conv2d, D2OPrecond, DhariwalUNet, EDMPrecond, FourierEmbedding, GroupNorm, Linear,
    PositionalEmbedding, SongUNet, UNetBlock, VEPrecond, VPPrecond, iDDPMPrecond,
)
from d2o.edm.loss import EDM_LOSS_CLASS_MAP, EDMLoss, VELoss, VPLoss  # noqa: F401
