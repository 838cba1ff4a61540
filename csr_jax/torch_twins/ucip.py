"""PyTorch twin of the official UCIP `UCIP_MLP` (lixinustc/UCIP_MLP_source_code, model_ucip.py).

Module names, registration order and shapes equal the official ones, so `state_dict()` is the
official one key for key (1066 tensors for `UCIP_Middle`) and an official checkpoint loads with
`strict=True`. The forward equals the official forward, except that the active token mixer's
deformable 1x1 conv (torchvision's `deform_conv2d`, which cannot be installed next to the CPU
torch here) is written as two gathers along one axis plus a 1x1 conv; torchvision's bilinear
sampling with a 1-D offset is exactly that (zero outside the image). Inference only: drop path
and dropout (all 0 in the official configs) are left out.

`VARIANTS` uses the keyword names of `csr_jax.models.ucip.VARIANTS` (tests check that the two
tables agree); `create(variant)` maps them onto the official constructor. `blind=True` adds the
JAX model's optional `prompts.i.task_head` (not in the official code).
"""

import math

import torch
import torch.nn.functional as F
from torch import nn

VARIANTS = {
    "middle": dict(embed_dim=128, p_dim=64, depths=(6, 6, 6, 6, 6, 6), mlp_ratio=4.0,
                   share_dim=2, intv=2, num_task=6, num_basis=8, num_feat=64),
    "small": dict(embed_dim=32, p_dim=16, depths=(2, 2), mlp_ratio=4.0, share_dim=2, intv=2,
                  num_task=6, num_basis=8, num_feat=32),
    "tiny": dict(embed_dim=16, p_dim=8, depths=(2,), mlp_ratio=2.0, share_dim=2, intv=2,
                 num_task=6, num_basis=4, num_feat=16),
}


class Mlp(nn.Module):
  """fc1 -> exact GELU -> fc2 (timm-style names)."""

  def __init__(self, in_features, hidden_features=None, out_features=None):
    super().__init__()
    self.fc1 = nn.Linear(in_features, hidden_features or in_features)
    self.act = nn.GELU()
    self.fc2 = nn.Linear(hidden_features or in_features, out_features or in_features)

  def forward(self, x):
    return self.fc2(self.act(self.fc1(x)))


class SPADE(nn.Module):
  """Instance norm (no affine) modulated by gamma/beta predicted from the prompt map."""

  def __init__(self, p_dim, norm_nc, label_nc):
    super().__init__()
    self.param_free_norm = nn.InstanceNorm2d(norm_nc, affine=False)
    nhidden = p_dim // 2
    self.mlp_shared = nn.Sequential(nn.Conv2d(label_nc, nhidden, 3, padding=1), nn.ReLU())
    self.mlp_gamma = nn.Conv2d(nhidden, norm_nc, 3, padding=1)
    self.mlp_beta = nn.Conv2d(nhidden, norm_nc, 3, padding=1)

  def forward(self, x, prompt):  # NCHW
    actv = self.mlp_shared(prompt)
    return self.param_free_norm(x) * (1 + self.mlp_gamma(actv)) + self.mlp_beta(actv)


def shift_sample(x, offset, axis: int):
  """x sampled at (index + offset) along `axis` (2: H, 3: W), linear, zero outside the image.

  x, offset: [B, C, H, W]. Equals torchvision's deform_conv2d sampling for a 1x1 kernel whose
  offset moves along one axis only (its `bilinear_interpolate` with an integer other coordinate).
  """
  n = x.shape[axis]
  idx = torch.arange(n, dtype=x.dtype, device=x.device)
  pos = offset + (idx.view(-1, 1) if axis == 2 else idx.view(1, -1))
  lo = torch.floor(pos)
  frac = pos - lo
  lo = lo.long()

  def tap(i):
    v = torch.gather(x, axis, i.clamp(0, n - 1))
    return torch.where((i >= 0) & (i <= n - 1), v, torch.zeros_like(v))

  return (1 - frac) * tap(lo) + frac * tap(lo + 1)


class ATMOp(nn.Module):
  """Deformable 1x1 conv whose per-channel offset moves along one dimension ('h' or 'w')."""

  def __init__(self, in_chans, out_chans, bias=True, dimension=""):
    super().__init__()
    if dimension not in ("h", "w"):
      raise NotImplementedError(f"{dimension} dimension not implemented")
    self.dimension = dimension
    self.weight = nn.Parameter(torch.empty(out_chans, in_chans, 1, 1))
    self.bias = nn.Parameter(torch.empty(out_chans)) if bias else None
    nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))
    if self.bias is not None:
      bound = 1 / math.sqrt(in_chans)
      nn.init.uniform_(self.bias, -bound, bound)

  def forward(self, x, offset):  # NCHW, offset [B, C, H, W]
    sampled = shift_sample(x, offset, 2 if self.dimension == "h" else 3)
    return F.conv2d(sampled, self.weight, self.bias)


class ATMLayer(nn.Module):
  """Active token mixer: horizontal, vertical and local branches fused by an MLP over channels."""

  def __init__(self, dim):
    super().__init__()
    self.dim = dim
    self.atm_h = ATMOp(dim, dim, dimension="h")
    self.atm_w = ATMOp(dim, dim, dimension="w")
    self.atm_local = nn.Conv2d(dim, dim, kernel_size=5, padding=2, groups=dim)
    self.fusion = Mlp(dim, dim // 4, dim * 3)
    self.proj = nn.Linear(dim, dim)

  def forward(self, x, offset):  # x [B, H, W, C], offset [B, 2C, H, W]
    b, h, w, c = x.shape
    if offset.shape != (b, 2 * c, h, w):
      raise ValueError(f"offset shape {tuple(offset.shape)} != {(b, 2 * c, h, w)}")
    xc = x.permute(0, 3, 1, 2)
    ow = self.atm_w(xc, offset[:, :c]).permute(0, 2, 3, 1)
    oh = self.atm_h(xc, offset[:, c:]).permute(0, 2, 3, 1)
    loc = self.atm_local(xc).permute(0, 2, 3, 1)
    a = (ow + oh + loc).mean(dim=(1, 2))
    a = self.fusion(a).reshape(b, c, 3).permute(2, 0, 1).softmax(dim=0)[:, :, None, None]
    return self.proj(ow * a[0] + oh * a[1] + loc * a[2])


class DynamicPromptBasis(nn.Module):
  """Per-pixel softmax over `num_basis` bases mixing the selected task's prompt bank
  (official class `Dyanmic_Prompt_Basis`). With `blind`, softmax task weights predicted from
  the pooled features mix the banks instead of a task id."""

  def __init__(self, dim, num_task=6, num_basis=8, embed_dim=128, blind=False):
    super().__init__()
    self.basis_mlp = Mlp(dim, hidden_features=num_basis, out_features=num_basis)
    self.num_basis = num_basis
    self.prompt = nn.Parameter(torch.rand(num_task, num_basis, 1, 1, embed_dim))
    self.task_head = nn.Linear(dim, num_task) if blind else None

  def forward(self, x, task_id):  # x [B, H, W, C] -> prompt [B, H, W, p]
    weights = F.softmax(self.basis_mlp(x).permute(0, 3, 1, 2), dim=1).unsqueeze(-1)
    if self.task_head is None:
      bank = self.prompt[task_id]  # [B, nb, 1, 1, p]
    else:
      t = F.softmax(self.task_head(x.mean(dim=(1, 2))), dim=-1)
      bank = torch.einsum("bt,tnijp->bnijp", t, self.prompt)
    return (bank * weights).sum(dim=1)


class DynamicActiveBlock(nn.Module):
  """LN-ATM and LN-MLP residuals, then SPADE modulation by the prompt; optionally new offsets."""

  def __init__(self, dim, p_dim, mlp_ratio=4.0, share_dim=1, new_offset=False):
    super().__init__()
    self.norm1 = nn.LayerNorm(dim)
    self.atm = ATMLayer(dim)
    self.norm2 = nn.LayerNorm(dim)
    self.mlp = Mlp(dim, int(dim * mlp_ratio))
    self.share_dim = share_dim
    self.offset_layer = (nn.Sequential(nn.LayerNorm(dim + p_dim),
                                       nn.Linear(dim + p_dim, dim * 2 // share_dim))
                         if new_offset else None)
    self.spade = SPADE(p_dim, dim, p_dim)

  def forward(self, x, prompt, offset=None):
    if self.offset_layer is not None and offset is None:
      offset = self.offset_layer(torch.cat([x, prompt], dim=-1))
      offset = offset.repeat_interleave(self.share_dim, dim=-1).permute(0, 3, 1, 2)
    x = x + self.atm(self.norm1(x), offset)
    x = x + self.mlp(self.norm2(x))
    x = self.spade(x.permute(0, 3, 1, 2), prompt.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)
    return x, offset


class PEG(nn.Module):
  """Depthwise 3x3 conv plus identity (positional encoding generator)."""

  def __init__(self, in_chans, embed_dim):
    super().__init__()
    self.proj = nn.Conv2d(in_chans, embed_dim, 3, 1, 1, groups=embed_dim)

  def forward(self, x):  # [B, H, W, C]
    xc = x.permute(0, 3, 1, 2)
    return (self.proj(xc) + xc).permute(0, 2, 3, 1)


class OverlapPatchEmbed(nn.Module):

  def __init__(self, patch_size=5, stride=1, padding=2, in_chans=3, embed_dim=64):
    super().__init__()
    self.proj = nn.Conv2d(in_chans, embed_dim, patch_size, stride, padding)

  def forward(self, x):
    return self.proj(x)


class UCIP_MLP(nn.Module):  # pylint: disable=invalid-name  (official class name)
  """UCIP x4 SR network; `forward(x [B, 3, H, W], task_id)` -> [B, 3, 4H, 4W]."""

  def __init__(self, p_dim=32, depths=(2, 2, 4, 2), embed_dims=(64, 64, 64, 64),
               mlp_ratios=(4, 4, 4, 4), share_dims=(1, 1, 1, 1), intv=2, num_task=6,
               num_basis=8, num_feat=64, in_chans=3, patch_size=5, blind=False, residual=None):
    super().__init__()
    self.depths, self.intv = tuple(depths), intv
    self.residual = residual  # 'bicubic': csr_jax's parameter-free global skip (not official)
    self.patch_embed = OverlapPatchEmbed(patch_size, 1, patch_size // 2, in_chans, embed_dims[0])
    self.blocks = nn.ModuleList()
    self.prompts = nn.ModuleList()
    for i, depth in enumerate(depths):
      self.blocks.append(nn.ModuleList([
          DynamicActiveBlock(embed_dims[i], p_dim, mlp_ratios[i], share_dims[i],
                             new_offset=(j % intv == 0 and j != depth - 1))
          for j in range(depth)]))
      self.prompts.append(DynamicPromptBasis(embed_dims[i], num_task, num_basis, p_dim, blind))
    self.pos_blocks = nn.ModuleList([PEG(ed, ed) for ed in embed_dims])
    c = embed_dims[-1]
    self.norm = nn.LayerNorm(c)
    self.conv_after_body = nn.Conv2d(c, c, 3, 1, 1)
    self.conv_before_up = nn.Sequential(nn.Conv2d(c, num_feat, 3, 1, 1), nn.LeakyReLU())
    self.conv_up1 = nn.Conv2d(num_feat, num_feat, 3, 1, 1)
    self.conv_up2 = nn.Conv2d(num_feat, num_feat, 3, 1, 1)
    self.conv_hr = nn.Conv2d(num_feat, num_feat, 3, 1, 1)
    self.conv_last = nn.Conv2d(num_feat, in_chans, 3, 1, 1)
    self.lrelu = nn.LeakyReLU(negative_slope=0.2)
    self.apply(self._init_weights)

  @staticmethod
  def _init_weights(m):
    """The official init (trunc-normal linears, He-normal convs)."""
    if isinstance(m, (nn.Linear, ATMOp)):
      nn.init.trunc_normal_(m.weight, std=0.02)
      if m.bias is not None:
        nn.init.zeros_(m.bias)
    elif isinstance(m, nn.LayerNorm):
      nn.init.ones_(m.weight)
      nn.init.zeros_(m.bias)
    elif isinstance(m, nn.Conv2d):
      fan_out = m.kernel_size[0] * m.kernel_size[1] * m.out_channels // m.groups
      nn.init.normal_(m.weight, 0, math.sqrt(2.0 / fan_out))
      if m.bias is not None:
        nn.init.zeros_(m.bias)

  def forward_blocks(self, x, task_id):
    offset = None  # As in the official code, a group whose first block is its last reuses it.
    for i in range(len(self.depths)):
      res = x
      prompt = self.prompts[i](x, task_id)
      for j, blk in enumerate(self.blocks[i]):
        if j % self.intv == 0 and j != len(self.blocks[i]) - 1:
          x = self.pos_blocks[i](x)
          x, offset = blk(x, prompt, None)
        else:
          x, _ = blk(x, prompt, offset)
      x = x + res
    return x

  def forward(self, x, task_id=(0,)):
    """task_id: one id per sample (or one for all), as in the official code; None if blind."""
    if task_id is None:
      if self.prompts[0].task_head is None:
        raise ValueError("UCIP twin: task_id is required unless built with blind=True")
    else:
      task_id = torch.as_tensor(task_id, dtype=torch.long, device=x.device).reshape(-1)
    inp = x
    x = self.patch_embed(x)
    res = x
    x = self.forward_blocks(x.permute(0, 2, 3, 1), task_id)
    x = self.norm(x).permute(0, 3, 1, 2)
    x = self.conv_after_body(x) + res
    x = self.conv_before_up(x)
    x = self.lrelu(self.conv_up1(F.interpolate(x, scale_factor=2, mode="nearest")))
    x = self.lrelu(self.conv_up2(F.interpolate(x, scale_factor=2, mode="nearest")))
    out = self.conv_last(self.lrelu(self.conv_hr(x)))
    if self.residual == "bicubic":
      out = out + F.interpolate(inp, size=out.shape[-2:], mode="bicubic", align_corners=False)
    return out


def create(variant: str = "middle", **overrides) -> UCIP_MLP:
  """The twin of a named variant; `overrides` replace its keywords (e.g. blind=True)."""
  if variant not in VARIANTS:
    raise KeyError(f"unknown UCIP twin variant {variant!r}; known: {sorted(VARIANTS)}")
  kw = {**VARIANTS[variant], **overrides}
  unknown = sorted(set(kw) - set(VARIANTS[variant]) - {"blind", "residual"})
  if unknown:
    raise TypeError(f"UCIP twin: unknown option(s) {unknown}")
  n = len(kw["depths"])
  return UCIP_MLP(p_dim=kw["p_dim"], depths=tuple(kw["depths"]), embed_dims=(kw["embed_dim"],) * n,
                  mlp_ratios=(kw["mlp_ratio"],) * n, share_dims=(kw["share_dim"],) * n,
                  intv=kw["intv"], num_task=kw["num_task"], num_basis=kw["num_basis"],
                  num_feat=kw["num_feat"], blind=kw.get("blind", False),
                  residual=kw.get("residual"))
