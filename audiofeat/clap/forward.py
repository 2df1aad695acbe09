"""The HTSAT audio tower and projection built from laion-clap's modules, and a lean inference path through them.

Each step of :func:`htsat_embedding` is the arithmetic of laion-clap's ``HTSAT_Swin_Transformer.forward`` for
non-fusion inference; the parity test against laion-clap's own forward bounds the difference.
"""
from __future__ import annotations

import contextlib
import functools
import types

from .. import _speedups
from . import EMBEDDING_DIM
from .laion import audio_config, laion_module


def build_audio_tower(model_name: str, *, initialise: bool = True):
    """The HTSAT audio branch and projection of ``model_name``, in eval mode: randomly initialised (seed the torch
    generator first for reproducible weights), or with ``initialise=False`` left as allocated, for a caller that
    loads a checkpoint over every parameter."""
    import torch
    from torch import nn

    cfg = audio_config(model_name)
    # htsat reads the config's attributes only; laion's CLAPAudioCfp lives in model.py, which imports
    # transformers (about two seconds), so a namespace with the same fields stands in for it.
    audio_cfg = types.SimpleNamespace(**cfg["audio_cfg"])
    htsat = laion_module("htsat")

    class ClapAudioTower(nn.Module):
        """``forward(waveform [shape=(batch, 480000)]) -> unit embeddings [shape=(batch, EMBEDDING_DIM)]``."""

        def __init__(self) -> None:
            super().__init__()
            with _speedups.torchlibrosa_constants():
                self.audio_branch = htsat.create_htsat_model(audio_cfg, enable_fusion=False, fusion_type="None")
            self.audio_projection = nn.Sequential(nn.Linear(cfg["embed_dim"], EMBEDDING_DIM), nn.ReLU(),
                                                  nn.Linear(EMBEDDING_DIM, EMBEDDING_DIM))

        def forward(self, waveform: torch.Tensor) -> torch.Tensor:
            return nn.functional.normalize(self.audio_projection(htsat_embedding(self.audio_branch, waveform)), dim=-1)

    with contextlib.nullcontext() if initialise else _speedups.random_init_skipped(htsat):
        return ClapAudioTower().eval()


def htsat_embedding(branch, waveform):
    """HTSAT's clip ``embedding`` ``[shape=(batch, 768)]`` of ``waveform`` ``[shape=(batch, 480000)]``, as
    ``HTSAT_Swin_Transformer.forward`` computes it for non-fusion inference, with laion-clap's modules and weights
    but a leaner path through them (each step is the same arithmetic; the parity test bounds the difference):

    - the frame-wise and class heads (``tscam_conv``, interpolations), whose outputs CLAP never uses, are skipped,
      and so are the per-layer attention maps ``BasicLayer`` stacks and averages in eval mode;
    - the STFT runs as an FFT with the window read from the checkpoint's DFT kernel, not as a 1024-tap
      convolution (15% of the model's FLOPs);
    - a Swin block's cyclic shift and window partition are one gather (and one back), not two copies each way,
      and its window attention is one fused ``scaled_dot_product_attention``;
    - on the CPU, linear layers run through oneDNN, the MLP's first fused with its GELU and the second with the
      residual sum, which saves two passes over the largest activations.
    """
    import torch

    # The front end stays in float32 under autocast: a loud clip's STFT power exceeds float16's range (65,504),
    # which turned whole embeddings into NaN with AMP on an H100.
    with torch.autocast(device_type=waveform.device.type, enabled=False):
        x = stft_power(branch.spectrogram_extractor.stft, waveform.float())
        x = branch.logmel_extractor(x)
        x = branch.bn0(x.transpose(1, 3)).transpose(1, 3)
        x = branch.reshape_wav2img(x)
    frames_num = x.shape[2]
    x = branch.patch_embed(x, longer_idx=None)
    if branch.ape:
        x = x + branch.absolute_pos_embed
    for layer in branch.layers:
        for block in layer.blocks:
            x = swin_block(block, x)
        if layer.downsample is not None:
            x = layer.downsample(x)
    x = branch.norm(x)
    batch, _, channels = x.shape
    sf = frames_num // (2 ** (len(branch.depths) - 1)) // branch.patch_stride[0]
    st = frames_num // (2 ** (len(branch.depths) - 1)) // branch.patch_stride[1]
    x = x.permute(0, 2, 1).contiguous().reshape(batch, channels, sf, st)
    c_freq_bin = sf // branch.freq_ratio
    x = x.reshape(batch, channels, sf // c_freq_bin, c_freq_bin, st)
    x = x.permute(0, 1, 3, 2, 4).contiguous().reshape(batch, channels, c_freq_bin, -1)
    return torch.flatten(branch.avgpool(torch.flatten(x, 2)), 1)


def stft_power(stft, waveform):
    """torchlibrosa's ``Spectrogram`` output ``[shape=(batch, 1, frames, n_fft // 2 + 1)]`` (power, centred,
    reflect-padded) computed with an FFT. ``stft`` is the model's ``STFT`` module: its kernel's DC row is the
    analysis window itself (``window * cos(0)``), so the checkpoint's window is used, whatever it holds."""
    import torch

    window = stft.conv_real.weight[0, 0]
    spec = torch.stft(waveform, window.shape[0], hop_length=stft.conv_real.stride[0], window=window,
                      center=stft.center, pad_mode=stft.pad_mode, return_complex=True)
    return (spec.real ** 2 + spec.imag ** 2).transpose(1, 2).unsqueeze(1)


@functools.lru_cache(maxsize=None)
def window_order(height: int, width: int, window: int, shift: int, device: str):
    """``(gather, scatter)`` token indices ``[shape=(height * width,)]``: ``x[:, gather]`` lists the tokens
    window by window after a cyclic shift by ``-shift`` (Swin's ``roll`` + ``window_partition``), and
    ``y[:, scatter]`` puts them back (``window_reverse`` + the reverse ``roll``)."""
    import torch

    index = torch.arange(height * width).view(height, width)
    if shift:
        index = torch.roll(index, (-shift, -shift), (0, 1))
    gather = index.view(height // window, window, width // window, window).permute(0, 2, 1, 3).reshape(-1)
    scatter = torch.empty_like(gather)
    scatter[gather] = torch.arange(height * width)
    return gather.to(device), scatter.to(device)


def swin_block(block, x):
    """laion-clap's ``SwinTransformerBlock.forward`` in eval mode ``[shape=(batch, tokens, channels)]``,
    without returning the attention map."""
    height, width = block.input_resolution
    batch, tokens, channels = x.shape
    gather, scatter = window_order(height, width, block.window_size, block.shift_size, str(x.device))
    windows = block.norm1(x).index_select(1, gather).view(-1, block.window_size ** 2, channels)
    attended = window_attention(block.attn, windows, block.attn_mask)
    x = x + attended.view(batch, tokens, channels).index_select(1, scatter)
    return _speedups.mlp_residual(block.mlp, block.norm2(x), x)


def window_attention(attn, x, mask):
    """laion-clap's ``WindowAttention.forward`` ``[shape=(windows * batch, window tokens, channels)]`` as one
    fused ``scaled_dot_product_attention`` (on the CPU a flash kernel, faster than laion's matmul, bias,
    softmax, matmul), with the relative position bias and the shift mask as its additive mask.
    """
    import torch

    windows, tokens, channels = x.shape
    heads = attn.num_heads
    qkv = _speedups.linear(attn.qkv, x).reshape(windows, tokens, 3, heads, channels // heads)
    q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # each (windows, heads, tokens, head channels)
    bias = attn.relative_position_bias_table[attn.relative_position_index.view(-1)]
    bias = bias.view(tokens, tokens, heads).permute(2, 0, 1)  # heads, tokens, tokens
    if mask is not None:  # mask: (windows per image, tokens, tokens) of 0 / -100; windows are image-major
        per_image = mask.shape[0]
        bias = (bias.unsqueeze(0) + mask.unsqueeze(1)).reshape(1, per_image * heads, tokens, tokens)
        q, k, v = (t.reshape(windows // per_image, per_image * heads, tokens, -1) for t in (q, k, v))
    else:
        bias = bias.unsqueeze(0)
    out = torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=bias.to(q.dtype), scale=attn.scale)
    out = out.reshape(windows, heads, tokens, -1).transpose(1, 2).reshape(windows, tokens, channels)
    return _speedups.linear(attn.proj, out)
