"""CISR: parallel and series integration of artifact reduction (ARM) and resolution
enhancement (REM), unfolded J steps with shared weights (DESIGN.md section 1.4).

  x_0 = bicubic(z);  y_j = ARM(x_{j-1}, z);  x_j = REM(y_j, z),  j = 1..J

z is the decoded (compressed) LR image, y_j estimates the clean LR and x_j the HR image. The
model is blind: "we do not include any degradation parameters in (7), resulting in a blind
restoration process" (section III-A), so it takes `model(lr)` only and the blocking detector
finds the block grid in z itself (csr_jax/layers/blocking.py); its mask is computed once per
forward and shared by both modules and all steps.

Each module (section III-B, Fig. 2): a guided non-local mean u of z (h estimated from g), then
"its output, the input, and the auxiliary input are concatenated" into an RCAN backbone
(residual groups of channel-attention blocks), and a long skip through a per-pixel convex
combination of (z, g, u). In ARM the auxiliary input x is rearranged "into s^2 copies by using
the space-to-depth transformation" (torch pixel_unshuffle order); the backbone gets all s^2
copies, the aligned one g = x_k included. "x_k is well registered with z, where k equals to the
number rounding off (s+1)/2": we read k as a 1-based index per axis (a 2-D raster index would
not name the registered copy even for s = 3), rounding half up, so g is the copy at 0-based
offset (s // 2, s // 2): s = 2 -> k = 2 (offset 1), s = 3 -> k = 2 (offset 1, exactly
registered), s = 4 -> k = 3 (offset 2). For even s the LR pixel centre lies half-way between
the copies at offsets s/2 - 1 and s/2; this reading takes the later one. In REM g = aux = y.
ARM ends with conv -> 3 (+ skip); REM with conv -> 3 s^2 + pixel shuffle (+ bicubic(skip)).

Under bfloat16 params and input the convs run in bfloat16; the blocking detector, the
non-local weights, the bandwidth h, both softmaxes, the bicubic resizes and the channel
attention's mean run in float32 and are cast back.
Weights take torch's default init (Conv2d's). The parameter layout is project-defined (no
official code): NNX paths equal the PyTorch twin's names (`csr_jax/torch_twins/cisr.py`).
"""

import jax
import jax.numpy as jnp
from flax import nnx

from csr_jax import losses
from csr_jax.conversion import Entry, ordered_table
from csr_jax.family import Evaluation, FamilySpec, Inference
from csr_jax.layers import init
from csr_jax.layers.blocking import blocking_edges
from csr_jax.layers.blocks import ChannelAttention
from csr_jax.layers.conv import Conv2d
from csr_jax.layers.non_local import NonLocal
from csr_jax.layers.resize import pixel_shuffle, pixel_unshuffle, resize_bicubic

_BASE = dict(channels=64, reduction=16, hidden=64, patch=3, chunk=1024)
VARIANTS = {
    **{f"full_x{s}": dict(_BASE, scale=s, n_groups=5, n_blocks=12, steps=3) for s in (2, 3, 4)},
    **{f"tiny_x{s}": dict(_BASE, scale=s, n_groups=2, n_blocks=12, steps=5) for s in (2, 3, 4)},
    # CPU tests and demos: same structure, 16 channels, 1 group x 2 blocks, 2 steps.
    **{f"small_x{s}": dict(_BASE, scale=s, channels=16, reduction=4, hidden=16, n_groups=1,
                           n_blocks=2, steps=2, chunk=256) for s in (2, 3, 4)},
}

# Loss step weights rho_j (paper): J = 3 -> .3, .6, 1; J = 5 -> .2, .4, .6, .8, 1; gamma = 1.
RHO = {3: (0.3, 0.6, 1.0), 5: (0.2, 0.4, 0.6, 0.8, 1.0)}
GAMMA = 1.0


def rho(steps: int) -> tuple[float, ...]:
  """Per-step loss weights: the paper's for J = 3 and 5, else linear j / J."""
  return RHO.get(steps, tuple((j + 1) / steps for j in range(steps)))


def bicubic(x, scale: int):
  """Bicubic x`scale` upsampling in x's dtype (the resize weights are float32)."""
  return resize_bicubic(x, (x.shape[1] * scale, x.shape[2] * scale)).astype(x.dtype)


class RCAB(nnx.Module):
  """Residual channel-attention block: x + CA(conv(relu(conv(x))))."""

  def __init__(self, channels: int, reduction: int, *, rngs):
    self.conv1 = Conv2d(channels, channels, 3, padding=1, rngs=rngs)
    self.conv2 = Conv2d(channels, channels, 3, padding=1, rngs=rngs)
    self.ca = ChannelAttention(channels, reduction, rngs=rngs)

  def __call__(self, x):
    return x + self.ca(self.conv2(jax.nn.relu(self.conv1(x))))


class ResidualGroup(nnx.Module):
  """RCAN residual group: x + conv(RCAB_n(...RCAB_1(x)))."""

  def __init__(self, channels: int, reduction: int, n_blocks: int, *, rngs):
    self.blocks = nnx.List([RCAB(channels, reduction, rngs=rngs) for _ in range(n_blocks)])
    self.conv = Conv2d(channels, channels, 3, padding=1, rngs=rngs)

  def __call__(self, x):
    r = x
    for blk in self.blocks:
      r = blk(r)
    return x + self.conv(r)


class Mix(nnx.Module):
  """Per-pixel convex combination of (z, g, u): softmax(conv1x1(relu(conv1x1([z, g, u]))))."""

  def __init__(self, hidden: int, *, rngs):
    self.conv1 = Conv2d(9, hidden, 1, rngs=rngs)
    self.conv2 = Conv2d(hidden, 3, 1, rngs=rngs)

  def __call__(self, z, g, u):
    logits = self.conv2(jax.nn.relu(self.conv1(jnp.concatenate([z, g, u], -1))))
    a = jax.nn.softmax(logits.astype(jnp.float32), -1).astype(z.dtype)
    return a[..., 0:1] * z + a[..., 1:2] * g + a[..., 2:3] * u


class CISRModule(nnx.Module):
  """Shared ARM/REM structure; `upscale` = 1 for ARM, s for REM."""

  def __init__(self, aux_channels: int, upscale: int, *, channels: int, reduction: int,
               n_groups: int, n_blocks: int, hidden: int, patch: int, chunk: int, rngs):
    self.upscale = upscale
    self.non_local = NonLocal(3, hidden, chunk, patch, rngs=rngs)
    self.head = Conv2d(6 + aux_channels, channels, 3, padding=1, rngs=rngs)
    self.body = nnx.List([ResidualGroup(channels, reduction, n_blocks, rngs=rngs)
                          for _ in range(n_groups)])
    self.body_conv = Conv2d(channels, channels, 3, padding=1, rngs=rngs)
    self.tail = Conv2d(channels, 3 * upscale * upscale, 3, padding=1, rngs=rngs)
    self.mix = Mix(hidden, rngs=rngs)

  def __call__(self, z, g, aux, keep, chunk=None):
    """z: the LR input; g: the guide; aux: the auxiliary input at LR size (ARM: all s^2
    copies, g among them; REM: y = g); keep: 1 - blocking mask of z."""
    u = self.non_local(z, g, keep, chunk)
    f = self.head(jnp.concatenate([u, z, aux], -1))
    r = f
    for grp in self.body:
      r = grp(r)
    out = self.tail(self.body_conv(r) + f)
    skip = self.mix(z, g, u)
    if self.upscale == 1:
      return out + skip
    return pixel_shuffle(out, self.upscale) + bicubic(skip, self.upscale)


def split_copies(x_hr, scale: int):
  """Space-to-depth of the HR estimate: (g = the aligned copy x_k [B, h, w, 3], all s^2 copies
  [B, h, w, 3 s^2] in torch pixel_unshuffle order); k per axis as the module docstring says."""
  o = scale // 2
  return x_hr[:, o::scale, o::scale], pixel_unshuffle(x_hr, scale)


class CISR(nnx.Module):
  """The unfolded ARM/REM recurrence; returns {'y': [y_1..y_J], 'x': [x_1..x_J]}."""

  def __init__(self, scale: int = 2, steps: int = 3, channels: int = 64, reduction: int = 16,
               n_groups: int = 5, n_blocks: int = 12, hidden: int = 64, patch: int = 3,
               chunk: int = 1024, *, rngs: nnx.Rngs):
    if scale < 2:
      raise ValueError(f"CISR: scale must be >= 2, got {scale}")
    if steps < 1:
      raise ValueError(f"CISR: steps must be >= 1, got {steps}")
    self.scale, self.steps = scale, steps
    keys = init.KeyStream(rngs)
    kw = dict(channels=channels, reduction=reduction, n_groups=n_groups, n_blocks=n_blocks,
              hidden=hidden, patch=patch, chunk=chunk, rngs=keys)
    self.arm = CISRModule(3 * scale * scale, 1, **kw)
    self.rem = CISRModule(3, scale, **kw)

  def keep_mask(self, z):
    """1 - the blocking-edge mask the detector finds in z (float32)."""
    return 1.0 - blocking_edges(z).astype(jnp.float32)

  def arm_step(self, x_prev, z, keep, chunk=None):
    g, copies = split_copies(x_prev, self.scale)
    return self.arm(z, g, copies, keep, chunk)

  def rem_step(self, y, z, keep, chunk=None):
    return self.rem(z, y, y, keep, chunk)

  def __call__(self, lr, *, chunk: int | None = None):
    if lr.ndim != 4 or lr.shape[-1] != 3:
      raise ValueError(f"CISR expects an NHWC RGB batch, got shape {lr.shape}")
    z = lr
    keep = self.keep_mask(z)
    x0 = bicubic(z, self.scale)

    def step(x, _):
      y = self.arm_step(x, z, keep, chunk)
      x = self.rem_step(y, z, keep, chunk)
      return x, (y, x)

    _, (ys, xs) = jax.lax.scan(step, x0, None, length=self.steps)
    return {"y": [ys[j] for j in range(self.steps)], "x": [xs[j] for j in range(self.steps)]}


def step_psnr(out, lr_clean, hr) -> dict:
  """PSNR (dB, RGB, images in [0, 1]) of every y_j against the clean LR and every x_j against
  the HR: {'y1': .., 'x1': .., ...}; the training loss is `unfolded_loss` below."""
  def psnr(a, b):
    return -10.0 * jnp.log10(jnp.mean(jnp.square(jnp.clip(a, 0.0, 1.0) - b)))
  res = {}
  for j, (y, x) in enumerate(zip(out["y"], out["x"]), 1):
    res[f"y{j}"], res[f"x{j}"] = psnr(y, lr_clean), psnr(x, hr)
  return res


# ---- Family protocol ----

# Torch (twin) state_dict order per module type: own parameters, then children.
_TORCH_ORDER = {
    CISR: ((), ("arm", "rem")),
    CISRModule: ((), ("non_local", "head", "body", "body_conv", "tail", "mix")),
    ResidualGroup: ((), ("blocks", "conv")),
    RCAB: ((), ("conv1", "conv2", "ca")),
    ChannelAttention: ((), ("attention",)),
    Mix: ((), ("conv1", "conv2")),
    NonLocal: ((), ("conv1", "conv2")),
}


def torch_table(model: CISR) -> list[Entry]:
  """The PyTorch twin's state_dict order (no official code exists, so the twin is the
  layout). Works on abstract models."""
  return ordered_table(model, _TORCH_ORDER, family="cisr")


def unfolded_loss(config):
  """Eq. 12: sum_j rho_j (|y_j - y| + gamma |x_j - x|) over the J unfolded steps, y the clean
  bicubic LR and x the HR; the norm is `config.loss` (L1; the paper does not name it)."""
  pixel = losses.pixel_loss(config.loss)
  rhos, gamma = tuple(config.loss_weights.rhos), config.loss_weights.gamma

  def loss(out, batch):
    ys, xs = out["y"], out["x"]
    if not len(ys) == len(xs) == len(rhos):
      raise ValueError(f"CISR gave {len(ys)} y / {len(xs)} x steps but config.loss_weights."
                       f"rhos has {len(rhos)} weights")
    return sum(r * (pixel(y, batch["lr_clean"]) + gamma * pixel(x, batch["hr"]))
               for r, y, x in zip(rhos, ys, xs))

  return loss


def _extras(out) -> dict:
  """Every step's x_j (scored against the HR) and y_j (against the clean LR)."""
  return {**{f"x{j}": x for j, x in enumerate(out["x"], 1)},
          **{f"y{j}": y for j, y in enumerate(out["y"], 1)}}


SPEC = FamilySpec(
    name="cisr", variants=VARIANTS, build=CISR, torch_table=torch_table,
    targets=("hr", "lr_clean"), loss=unfolded_loss, predict=lambda out: out["x"][-1],
    extras=_extras, extra_target=lambda name: "hr" if name.startswith("x") else "lr_clean",
    inference=Inference(multiple=1),
    evaluation=Evaluation(channel="y", best_metric="psnr_y"))


create = SPEC.create
