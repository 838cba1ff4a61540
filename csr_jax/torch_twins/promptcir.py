"""PyTorch twin of the official PromptCIR `MyModel(decoder=True)` (lbc12345/PromptCIR-NTIRE24,
model.py).

Module names, registration order and shapes equal the official ones, so `state_dict()` is the
official one key for key (868 parameters + the two int64 relative position index buffers for the
official size) and an official checkpoint loads with `strict=True`. Differences, none of which
change the official model's outputs: sizes are constructor arguments (the official code fixes
the shift-mask window to a module constant WS=16); HAB's `input_resolution` clamp, which never
fires at the official img_size=128, is left out; dropout/drop path (all 0) and the unused
`decoder=False` path are left out; timm/einops are not needed. NCHW in, NCHW out.
"""

import torch
import torch.nn.functional as F
from torch import nn

from csr_jax.torch_twins.common import (ChannelAttention, calculate_mask, calculate_rpi,
                                         window_partition, window_reverse)

VARIANTS = {
    "official": dict(dim=48, num_blocks=(4, 6, 6, 8), num_refinement_blocks=4,
                     heads=(1, 2, 4, 8), window_size=16, num_basis=(64, 32, 16),
                     prompt_dims=(64, 128, 320)),
    "small": dict(dim=16, num_blocks=(2, 2, 1, 1), num_refinement_blocks=1,
                  heads=(1, 2, 4, 8), window_size=8, num_basis=(8, 8, 8),
                  prompt_dims=(16, 32, 64)),
}


def calculate_rpi_oca(ws, overlap_ratio):
  wse = ws + int(overlap_ratio * ws)
  ori = torch.flatten(torch.stack(torch.meshgrid([torch.arange(ws)] * 2, indexing="ij")), 1)
  ext = torch.flatten(torch.stack(torch.meshgrid([torch.arange(wse)] * 2, indexing="ij")), 1)
  rel = (ext[:, None, :] - ori[:, :, None]).permute(1, 2, 0).contiguous()
  rel[:, :, 0] += ws - wse + 1
  rel[:, :, 1] += ws - wse + 1
  rel[:, :, 0] *= ws + wse - 1
  return rel.sum(-1)


class WithBiasLayerNorm(nn.Module):
  """Restormer `WithBias_LayerNorm` over the last axis (eps 1e-5, biased variance)."""

  def __init__(self, dim):
    super().__init__()
    self.weight = nn.Parameter(torch.ones(dim))
    self.bias = nn.Parameter(torch.zeros(dim))

  def forward(self, x):
    mu = x.mean(-1, keepdim=True)
    sigma = x.var(-1, keepdim=True, unbiased=False)
    return (x - mu) / torch.sqrt(sigma + 1e-5) * self.weight + self.bias


class LayerNorm(nn.Module):
  """Restormer `LayerNorm` wrapper on NCHW (params under `body`)."""

  def __init__(self, dim):
    super().__init__()
    self.body = WithBiasLayerNorm(dim)

  def forward(self, x):
    return self.body(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


class FeedForward(nn.Module):
  """GDFN."""

  def __init__(self, dim, ffn_expansion_factor, bias):
    super().__init__()
    hidden = int(dim * ffn_expansion_factor)
    self.project_in = nn.Conv2d(dim, hidden * 2, kernel_size=1, bias=bias)
    self.dwconv = nn.Conv2d(hidden * 2, hidden * 2, 3, 1, 1, groups=hidden * 2, bias=bias)
    self.project_out = nn.Conv2d(hidden, dim, kernel_size=1, bias=bias)

  def forward(self, x):
    x1, x2 = self.dwconv(self.project_in(x)).chunk(2, dim=1)
    return self.project_out(F.gelu(x1) * x2)


class Attention(nn.Module):
  """MDTA."""

  def __init__(self, dim, num_heads, bias):
    super().__init__()
    self.num_heads = num_heads
    self.temperature = nn.Parameter(torch.ones(num_heads, 1, 1))
    self.qkv = nn.Conv2d(dim, dim * 3, kernel_size=1, bias=bias)
    self.qkv_dwconv = nn.Conv2d(dim * 3, dim * 3, 3, 1, 1, groups=dim * 3, bias=bias)
    self.project_out = nn.Conv2d(dim, dim, kernel_size=1, bias=bias)

  def forward(self, x):
    b, c, h, w = x.shape
    q, k, v = self.qkv_dwconv(self.qkv(x)).chunk(3, dim=1)
    q, k, v = (t.reshape(b, self.num_heads, c // self.num_heads, h * w) for t in (q, k, v))
    q = F.normalize(q, dim=-1)
    k = F.normalize(k, dim=-1)
    attn = ((q @ k.transpose(-2, -1)) * self.temperature).softmax(dim=-1)
    return self.project_out((attn @ v).reshape(b, c, h, w))


class TransformerBlock(nn.Module):

  def __init__(self, dim, num_heads, ffn_expansion_factor, bias):
    super().__init__()
    self.norm1 = LayerNorm(dim)
    self.attn = Attention(dim, num_heads, bias)
    self.norm2 = LayerNorm(dim)
    self.ffn = FeedForward(dim, ffn_expansion_factor, bias)

  def forward(self, x):
    x = x + self.attn(self.norm1(x))
    return x + self.ffn(self.norm2(x))


class CAB(nn.Module):

  def __init__(self, num_feat, compress_ratio, squeeze_factor):
    super().__init__()
    self.cab = nn.Sequential(
        nn.Conv2d(num_feat, num_feat // compress_ratio, 3, 1, 1), nn.GELU(),
        nn.Conv2d(num_feat // compress_ratio, num_feat, 3, 1, 1),
        ChannelAttention(num_feat, squeeze_factor))

  def forward(self, x):
    return self.cab(x)


class WindowAttention(nn.Module):

  def __init__(self, dim, window_size, num_heads):
    super().__init__()
    self.window_size, self.num_heads = window_size, num_heads
    self.scale = (dim // num_heads) ** -0.5
    self.relative_position_bias_table = nn.Parameter(
        torch.zeros((2 * window_size - 1) ** 2, num_heads))
    self.qkv = nn.Linear(dim, dim * 3)
    self.proj = nn.Linear(dim, dim)
    nn.init.trunc_normal_(self.relative_position_bias_table, std=.02)

  def forward(self, x, rpi, mask=None):
    b_, n, c = x.shape
    qkv = self.qkv(x).reshape(b_, n, 3, self.num_heads, c // self.num_heads).permute(2, 0, 3, 1, 4)
    q, k, v = qkv[0] * self.scale, qkv[1], qkv[2]
    attn = q @ k.transpose(-2, -1)
    bias = self.relative_position_bias_table[rpi.view(-1)].view(n, n, -1).permute(2, 0, 1)
    attn = attn + bias.unsqueeze(0)
    if mask is not None:
      nw = mask.shape[0]
      attn = attn.view(b_ // nw, nw, self.num_heads, n, n) + mask.unsqueeze(1).unsqueeze(0)
      attn = attn.view(-1, self.num_heads, n, n)
    attn = attn.softmax(dim=-1)
    return self.proj((attn @ v).transpose(1, 2).reshape(b_, n, c))


class HAB(nn.Module):

  def __init__(self, dim, num_heads, window_size, shift_size, compress_ratio, squeeze_factor,
               conv_scale, ffn_expansion_factor):
    super().__init__()
    self.window_size, self.shift_size, self.conv_scale = window_size, shift_size, conv_scale
    self.norm1 = nn.LayerNorm(dim)
    self.attn = WindowAttention(dim, window_size, num_heads)
    self.conv_block = CAB(dim, compress_ratio, squeeze_factor)
    self.norm2 = nn.LayerNorm(dim)
    self.ffn = FeedForward(dim, ffn_expansion_factor, bias=True)

  def forward(self, x, x_size, rpi_sa, attn_mask):
    h, w = x_size
    b, _, c = x.shape
    ws, s = self.window_size, self.shift_size
    shortcut = x
    x = self.norm1(x).view(b, h, w, c)
    conv_x = self.conv_block(x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1).reshape(b, h * w, c)
    shifted = torch.roll(x, shifts=(-s, -s), dims=(1, 2)) if s else x
    win = window_partition(shifted, ws).view(-1, ws * ws, c)
    win = self.attn(win, rpi=rpi_sa, mask=attn_mask if s else None).view(-1, ws, ws, c)
    shifted = window_reverse(win, ws, h, w)
    attn_x = torch.roll(shifted, shifts=(s, s), dims=(1, 2)) if s else shifted
    x = shortcut + attn_x.reshape(b, h * w, c) + conv_x * self.conv_scale
    y = self.ffn(self.norm2(x).view(b, h, w, c).permute(0, 3, 1, 2))
    return x + y.permute(0, 2, 3, 1).reshape(b, h * w, c)


class OCAB(nn.Module):

  def __init__(self, dim, window_size, overlap_ratio, num_heads, ffn_expansion_factor):
    super().__init__()
    self.dim, self.window_size, self.num_heads = dim, window_size, num_heads
    self.scale = (dim // num_heads) ** -0.5
    self.overlap_win_size = int(window_size * overlap_ratio) + window_size
    ows = self.overlap_win_size
    self.norm1 = nn.LayerNorm(dim)
    self.qkv = nn.Linear(dim, dim * 3)
    self.unfold = nn.Unfold(kernel_size=(ows, ows), stride=window_size,
                            padding=(ows - window_size) // 2)
    self.relative_position_bias_table = nn.Parameter(
        torch.zeros((window_size + ows - 1) ** 2, num_heads))
    nn.init.trunc_normal_(self.relative_position_bias_table, std=.02)
    self.proj = nn.Linear(dim, dim)
    self.norm2 = nn.LayerNorm(dim)
    self.ffn = FeedForward(dim, ffn_expansion_factor, bias=True)

  def forward(self, x, x_size, rpi):
    h, w = x_size
    b, _, c = x.shape
    ws, ows, nh = self.window_size, self.overlap_win_size, self.num_heads
    shortcut = x
    qkv = self.qkv(self.norm1(x).view(b, h, w, c)).reshape(b, h, w, 3, c).permute(3, 0, 4, 1, 2)
    q = window_partition(qkv[0].permute(0, 2, 3, 1), ws).view(-1, ws * ws, c)
    kv = self.unfold(torch.cat((qkv[1], qkv[2]), dim=1))  # b, 2*c*ows*ows, nw
    nw = kv.shape[-1]
    kv = kv.view(b, 2, c, ows * ows, nw).permute(1, 0, 4, 3, 2).reshape(2, b * nw, ows * ows, c)
    b_, nq, _ = q.shape
    n = kv.shape[2]
    d = c // nh
    q = q.reshape(b_, nq, nh, d).permute(0, 2, 1, 3) * self.scale
    k = kv[0].reshape(b_, n, nh, d).permute(0, 2, 1, 3)
    v = kv[1].reshape(b_, n, nh, d).permute(0, 2, 1, 3)
    attn = q @ k.transpose(-2, -1)
    bias = self.relative_position_bias_table[rpi.view(-1)].view(nq, n, -1).permute(2, 0, 1)
    attn = (attn + bias.unsqueeze(0)).softmax(dim=-1)
    out = (attn @ v).transpose(1, 2).reshape(b_, nq, c).view(-1, ws, ws, c)
    x = self.proj(window_reverse(out, ws, h, w).view(b, h * w, c)) + shortcut
    y = self.ffn(self.norm2(x).view(b, h, w, c).permute(0, 3, 1, 2))
    return x + y.permute(0, 2, 3, 1).reshape(b, h * w, c)


class AttenBlocks(nn.Module):

  def __init__(self, dim, depth, num_heads, window_size, compress_ratio, squeeze_factor,
               conv_scale, overlap_ratio, ffn_expansion_factor):
    super().__init__()
    self.blocks = nn.ModuleList([
        HAB(dim, num_heads, window_size, 0 if i % 2 == 0 else window_size // 2, compress_ratio,
            squeeze_factor, conv_scale, ffn_expansion_factor) for i in range(depth)])
    self.overlap_attn = OCAB(dim, window_size, overlap_ratio, num_heads, ffn_expansion_factor)

  def forward(self, x, x_size, params):
    for blk in self.blocks:
      x = blk(x, x_size, params["rpi_sa"], params["attn_mask"])
    return self.overlap_attn(x, x_size, params["rpi_oca"])


class RHAG(nn.Module):

  def __init__(self, dim, depth, num_heads, window_size, compress_ratio, squeeze_factor,
               conv_scale, overlap_ratio, ffn_expansion_factor):
    super().__init__()
    self.window_size = window_size
    self.residual_group = AttenBlocks(dim, depth, num_heads, window_size, compress_ratio,
                                      squeeze_factor, conv_scale, overlap_ratio,
                                      ffn_expansion_factor)
    self.conv = nn.Conv2d(dim, dim, 3, 1, 1)

  def forward(self, x, params):
    b, c, h, w = x.shape
    params = dict(params, attn_mask=calculate_mask(h, w, self.window_size,
                                                   self.window_size // 2).to(x.device))
    y = self.residual_group(x.flatten(2).transpose(1, 2), (h, w), params)
    return self.conv(y.transpose(1, 2).reshape(b, c, h, w)) + x


class Downsample(nn.Module):

  def __init__(self, n_feat):
    super().__init__()
    self.body = nn.Sequential(nn.Conv2d(n_feat, n_feat // 2, 3, 1, 1, bias=False),
                              nn.PixelUnshuffle(2))

  def forward(self, x):
    return self.body(x)


class Upsample(nn.Module):

  def __init__(self, n_feat):
    super().__init__()
    self.body = nn.Sequential(nn.Conv2d(n_feat, n_feat * 2, 3, 1, 1, bias=False),
                              nn.PixelShuffle(2))

  def forward(self, x):
    return self.body(x)


class OverlapPatchEmbed(nn.Module):

  def __init__(self, in_c, embed_dim):
    super().__init__()
    self.proj = nn.Conv2d(in_c, embed_dim, 3, 1, 1, bias=False)

  def forward(self, x):
    return self.proj(x)


class Mlp(nn.Module):

  def __init__(self, in_features, hidden_features, out_features):
    super().__init__()
    self.fc1 = nn.Linear(in_features, hidden_features)
    self.act = nn.GELU()
    self.fc2 = nn.Linear(hidden_features, out_features)

  def forward(self, x):
    return self.fc2(self.act(self.fc1(x)))


class ActiveBlock_Prompt_Basis(nn.Module):  # pylint: disable=invalid-name

  def __init__(self, dim, num_task, num_basis, embed_dim):
    super().__init__()
    self.basis_mlp = Mlp(dim, num_basis, num_basis)
    self.task_mlp = Mlp(dim, num_task, num_task)
    self.prompt = nn.Parameter(torch.rand(1, num_task, num_basis, embed_dim, 1, 1))
    self.conv3x3 = nn.Conv2d(embed_dim, embed_dim, 3, 1, 1, bias=False)

  def forward(self, x):
    x = x.permute(0, 2, 3, 1)
    basis = F.softmax(self.basis_mlp(x).permute(0, 3, 1, 2), dim=1)  # B, nb, H, W
    task = F.softmax(self.task_mlp(x).permute(0, 3, 1, 2), dim=1)  # B, T, H, W
    prompts = (basis[:, None, :, None] * self.prompt[0][None]).sum(dim=2)  # B, T, E, H, W
    return self.conv3x3((task[:, :, None] * prompts).sum(dim=1))


class MyModel(nn.Module):
  """`MyModel(decoder=True)`; defaults are the official sizes."""

  def __init__(self, inp_channels=3, out_channels=3, dim=48, num_blocks=(4, 6, 6, 8),
               num_refinement_blocks=4, heads=(1, 2, 4, 8), ffn_expansion_factor=2.66,
               bias=False, window_size=16, compress_ratio=3, squeeze_factor=16,
               num_basis=(64, 32, 16), prompt_dims=(64, 128, 320), num_task=7,
               overlap_ratio=0.5, conv_scale=0.01):
    super().__init__()
    ffn = ffn_expansion_factor
    d1, d2, d3, d4 = dim, dim * 2, dim * 4, dim * 8
    p1, p2, p3 = prompt_dims
    hab = dict(window_size=window_size, compress_ratio=compress_ratio,
               squeeze_factor=squeeze_factor, conv_scale=conv_scale, overlap_ratio=overlap_ratio,
               ffn_expansion_factor=ffn)
    self.window_size, self.overlap_ratio = window_size, overlap_ratio

    def restormer(d, n, h):
      return nn.Sequential(*[TransformerBlock(d, h, ffn, bias) for _ in range(n)])

    self.patch_embed_input = OverlapPatchEmbed(inp_channels, dim)
    self.register_buffer("relative_position_index_SA", calculate_rpi(window_size))
    self.register_buffer("relative_position_index_OCA",
                         calculate_rpi_oca(window_size, overlap_ratio))
    self.prompt1 = ActiveBlock_Prompt_Basis(d2, num_task, num_basis[0], p1)
    self.prompt2 = ActiveBlock_Prompt_Basis(d3, num_task, num_basis[1], p2)
    self.prompt3 = ActiveBlock_Prompt_Basis(d4, num_task, num_basis[2], p3)
    self.encoder_level1 = RHAG(d1, num_blocks[0], heads[0], **hab)
    self.down1_2 = Downsample(d1)
    self.encoder_level2 = RHAG(d2, num_blocks[1], heads[1], **hab)
    self.down2_3 = Downsample(d2)
    self.encoder_level3 = restormer(d3, num_blocks[2], heads[2])
    self.down3_4 = Downsample(d3)
    self.latent = restormer(d4, num_blocks[3], heads[3])
    self.up4_3 = Upsample(d3)
    self.reduce_chan_level3 = nn.Conv2d(d2 + d3, d3, kernel_size=1, bias=bias)
    self.noise_level3 = TransformerBlock(d4 + p3, heads[2], ffn, bias)
    self.reduce_noise_level3 = nn.Conv2d(d4 + p3, d3, kernel_size=1, bias=bias)
    self.decoder_level3 = restormer(d3, num_blocks[2], heads[2])
    self.up3_2 = Upsample(d3)
    self.reduce_chan_level2 = nn.Conv2d(d3, d2, kernel_size=1, bias=bias)
    self.noise_level2 = TransformerBlock(d3 + p2, heads[2], ffn, bias)
    self.reduce_noise_level2 = nn.Conv2d(d3 + p2, d3, kernel_size=1, bias=bias)
    self.decoder_level2 = RHAG(d2, num_blocks[1], heads[1], **hab)
    self.up2_1 = Upsample(d2)
    self.noise_level1 = TransformerBlock(d2 + p1, heads[2], ffn, bias)
    self.reduce_noise_level1 = nn.Conv2d(d2 + p1, d2, kernel_size=1, bias=bias)
    self.decoder_level1 = RHAG(d2, num_blocks[0], heads[0], **hab)
    self.refinement = restormer(d2, num_refinement_blocks, heads[0])
    self.output = nn.Conv2d(d2, out_channels, 3, 1, 1, bias=bias)
    self.apply(self._init_weights)

  @staticmethod
  def _init_weights(m):
    if isinstance(m, nn.Linear):
      nn.init.trunc_normal_(m.weight, std=.02)
      if m.bias is not None:
        nn.init.constant_(m.bias, 0)
    elif isinstance(m, nn.LayerNorm):
      nn.init.constant_(m.bias, 0)
      nn.init.constant_(m.weight, 1.0)

  def forward(self, inp_img):
    params = {"rpi_sa": self.relative_position_index_SA,
              "rpi_oca": self.relative_position_index_OCA}
    enc1 = self.encoder_level1(self.patch_embed_input(inp_img), params)
    enc2 = self.encoder_level2(self.down1_2(enc1), params)
    enc3 = self.encoder_level3(self.down2_3(enc2))
    latent = self.latent(self.down3_4(enc3))
    latent = torch.cat([latent, self.prompt3(latent)], 1)
    latent = self.reduce_noise_level3(self.noise_level3(latent))
    dec3 = self.reduce_chan_level3(torch.cat([self.up4_3(latent), enc3], 1))
    dec3 = self.decoder_level3(dec3)
    dec3 = torch.cat([dec3, self.prompt2(dec3)], 1)
    dec3 = self.reduce_noise_level2(self.noise_level2(dec3))
    dec2 = self.reduce_chan_level2(torch.cat([self.up3_2(dec3), enc2], 1))
    dec2 = self.decoder_level2(dec2, params)
    dec2 = torch.cat([dec2, self.prompt1(dec2)], 1)
    dec2 = self.reduce_noise_level1(self.noise_level1(dec2))
    dec1 = torch.cat([self.up2_1(dec2), enc1], 1)
    dec1 = self.refinement(self.decoder_level1(dec1, params))
    return self.output(dec1) + inp_img


def create(variant: str = "official", **overrides) -> MyModel:
  if variant not in VARIANTS:
    raise KeyError(f"unknown promptcir twin variant {variant!r}; known: {sorted(VARIANTS)}")
  return MyModel(**{**VARIANTS[variant], **overrides})
