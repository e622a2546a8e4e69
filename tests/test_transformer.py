"""The hand-written post-norm encoder layer against PyTorch's, and TransAct's max_len."""

from __future__ import annotations

import torch
from torch import nn

from ranker.nn.transformer import Encoder, EncoderLayer


def copy_into(ours: EncoderLayer, ref: nn.TransformerEncoderLayer) -> None:
    with torch.no_grad():
        ours.qkv.weight.copy_(ref.self_attn.in_proj_weight)
        ours.qkv.bias.copy_(ref.self_attn.in_proj_bias)
        ours.out.weight.copy_(ref.self_attn.out_proj.weight)
        ours.out.bias.copy_(ref.self_attn.out_proj.bias)
        for a, b in [
            (ours.ff1, ref.linear1),
            (ours.ff2, ref.linear2),
            (ours.norm1, ref.norm1),
            (ours.norm2, ref.norm2),
        ]:
            a.weight.copy_(b.weight)
            a.bias.copy_(b.bias)


def test_layer_equals_pytorch_post_norm_layer_with_padding() -> None:
    torch.manual_seed(0)
    d, heads, length = 12, 3, 7
    ref = nn.TransformerEncoderLayer(d, heads, 20, 0.0, batch_first=True).eval()
    ours = EncoderLayer(d, heads, 20, 0.0).eval()
    copy_into(ours, ref)
    x = torch.randn(4, length, d, requires_grad=True)
    attend = torch.rand(4, length) > 0.3
    attend[:, -1] = True
    expect = ref(x, src_key_padding_mask=~attend)
    got = ours(x, attend)
    torch.testing.assert_close(got, expect, atol=1e-5, rtol=1e-5)
    # gradients agree too (training path, dropout 0)
    (g_ref,) = torch.autograd.grad(ref.train()(x, src_key_padding_mask=~attend).sum(), x)
    (g_ours,) = torch.autograd.grad(ours.train()(x, attend).sum(), x)
    torch.testing.assert_close(g_ours, g_ref, atol=1e-5, rtol=1e-5)


def test_padding_keys_do_not_influence_real_rows() -> None:
    torch.manual_seed(1)
    enc = Encoder(8, 2, 2, 16, dropout=0.0).eval()
    x = torch.randn(2, 5, 8)
    attend = torch.tensor([[False, False, True, True, True]] * 2)
    changed = x.clone()
    changed[:, :2] = torch.randn(2, 2, 8) * 100  # rewrite the padded slots
    torch.testing.assert_close(enc(changed, attend)[:, 2:], enc(x, attend)[:, 2:])


def test_attention_dropout_is_training_only() -> None:
    torch.manual_seed(2)
    layer = EncoderLayer(8, 1, 16, dropout=0.0, attention_dropout=0.5)
    x, attend = torch.randn(3, 6, 8), torch.ones(3, 6, dtype=torch.bool)
    assert not torch.allclose(layer.train()(x, attend), layer.train()(x, attend))
    torch.testing.assert_close(layer.eval()(x, attend), layer.eval()(x, attend))


def test_no_mask_equals_a_mask_of_real_keys_only() -> None:
    torch.manual_seed(0)
    enc = Encoder(16, 2, 2, 32, dropout=0.0).eval()
    x = torch.randn(3, 5, 16)
    torch.testing.assert_close(enc(x, None), enc(x, torch.ones(3, 5, dtype=torch.bool)))
