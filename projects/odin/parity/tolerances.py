"""The parity check's tolerances and its error measure."""
from torch import Tensor

#: relative error above which a continuous stage fails
TOLERANCE = 1e-4
#: relative float64 gap between the k-th and (k+1)-th neighbour distance below which a row's
#: k-NN selection is a near-tie: float32 kernels of different CPUs may keep either candidate
TIE_RTOL = 1e-6
#: an attention-mask entry may differ from the golden's where its logit is within this fraction of
#: the level's largest |logit| from 0 (``sigmoid < 0.5`` is then decided by float32 rounding)
MASK_RTOL = 1e-5


def rel_err(ours: Tensor, ref: Tensor) -> float:
    """Max |ours - ref| / max |ref| (shape mismatch -> inf).

    Args:
        ours: our tensor, any shape, on any device.
        ref: the reference tensor, the same shape, on any device (compared on the CPU).

    Returns:
        float: the relative error (0 for empty tensors).
    """
    ours, ref = ours.detach().float().cpu(), ref.detach().float().cpu()
    if tuple(ours.shape) != tuple(ref.shape):
        return float('inf')
    if ref.numel() == 0:
        return 0.0
    return ((ours - ref).abs().max() / ref.abs().max().clamp_min(1e-12)).item()
