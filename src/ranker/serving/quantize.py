"""Dynamic int8 quantisation of a ranker's linear layers, a serving option (CPU).

``ranker bundle --quantize int8`` records the choice in the manifest; :func:`load_bundle`
applies :func:`quantize_model` to the ranker after loading its float weights. Every
``nn.Linear`` (the transformer's projections and feed-forward, the MLP, the towers, the target
attention's W_q) becomes PyTorch's dynamically quantised linear: weights stored as int8 with
one scale per tensor, activations quantised per call from their observed range, the product
accumulated in int32 and returned in float32 (Jacob et al., CVPR 2018, "Quantization and
Training of Neural Networks for Efficient Integer-Arithmetic-Only Inference", the affine
scheme r = S (q − Z)). Embedding tables, layer norms, attention's softmax and cross networks
built on raw parameters stay in float32. The scores move slightly; the quality cost is
measured, not assumed (``benchmarks/score_designs.py``).

It uses ``torch.ao.quantization.quantize_dynamic``, deprecated in favour of torchao since
PyTorch 2.10 but present and working on CPU in the 2.13 this project pins; its deprecation
warnings are silenced here. Without the ``x86``/``fbgemm`` or ``qnnpack`` engine (a CPU build
of PyTorch has them) the option is refused when the bundle loads.
"""

from __future__ import annotations

import warnings
from typing import TypeVar

import torch
from torch import nn

from ranker.errors import ConfigError

QUANTIZE = ("int8",)  # the values of `ranker bundle --quantize`


M = TypeVar("M", bound=nn.Module)


def quantize_model(model: M, kind: str) -> M:
    """`model` (eval mode) with every ``nn.Linear`` dynamically quantised to int8; a copy."""
    if kind not in QUANTIZE:
        raise ConfigError(f"quantize: {kind!r} is not one of {', '.join(QUANTIZE)}")
    engines = torch.backends.quantized.supported_engines
    if not {"x86", "fbgemm", "qnnpack"} & set(engines):
        raise ConfigError(f"quantize: {kind}: this PyTorch build has no int8 CPU engine (engines: {engines})")
    from torch.ao.quantization import quantize_dynamic

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.filterwarnings("ignore", message=".*quantize_per_tensor.*", category=UserWarning)
        return quantize_dynamic(model.eval(), {nn.Linear}, dtype=torch.qint8)
