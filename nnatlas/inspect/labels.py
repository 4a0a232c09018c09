"""How a layer or an operation is named in the diagram and the table, in the seeds' words.

``Conv2D [K=5, S=1, P=0, In=1, Out=6]``, ``MaxPool2D [K=2, S=2]``, ``Linear [400, 120]``,
``BatchNorm2D [64]``, ``ReLU``; functional operations as symbols (``+``, ``cat(dim=1)``).
"""

from __future__ import annotations

from torch import nn

__all__ = ["layer_title", "layer_label", "op_title"]

# Class names the seeds spell differently (a trailing "d" for the dimension becomes "D").
_TITLES = {"ReLU": "ReLU", "GELU": "GELU", "SiLU": "SiLU", "Softmax": "Softmax", "LogSoftmax": "LogSoftmax"}

_OPS = {
    "add": "+", "sub": "-", "mul": "×", "div": "÷", "matmul": "@", "bmm": "@", "mm": "@",
    "cat": "cat", "stack": "stack", "reshape": "reshape", "view": "reshape", "flatten": "reshape",
    "softmax": "Softmax", "log_softmax": "LogSoftmax", "sigmoid": "Sigmoid", "tanh": "Tanh", "relu": "ReLU",
    "gelu": "GELU", "silu": "SiLU", "exp": "exp", "randn_like": "ε ~ N(0, I)", "randn": "ε ~ N(0, I)",
    "rand_like": "u ~ U(0, 1)", "getitem": "select", "scaled_dot_product_attention": "Attention",
    "linear": "Linear", "chunk": "chunk", "split": "split", "mean": "mean", "sum": "sum",
    "layer_norm": "LayerNorm", "dropout": "Dropout", "embedding": "Embedding", "conv2d": "conv2d",
    "max_pool2d": "MaxPool2D", "avg_pool2d": "AvgPool2D", "adaptive_avg_pool2d": "AdaptiveAvgPool2D",
    "interpolate": "Upsample", "pad": "pad", "einsum": "einsum", "masked_fill": "masked_fill", "setitem": "assign",
}


def layer_title(module_type: str) -> str:
    """``Conv2d`` -> ``Conv2D``, ``BatchNorm1d`` -> ``BatchNorm1D``; other names unchanged."""
    if module_type in _TITLES:
        return _TITLES[module_type]
    if len(module_type) > 2 and module_type[-1] == "d" and module_type[-2].isdigit():
        return module_type[:-1] + "D"
    return module_type


def op_title(op: str) -> str:
    """The symbol or name a functional operation is drawn with."""
    return _OPS.get(op, op)


def _pair(value: object) -> str:
    if isinstance(value, (tuple, list)):
        values = [str(v) for v in value]
        return values[0] if len(set(values)) == 1 else "x".join(values)
    return str(value)


def layer_label(module: nn.Module) -> str:
    """A layer's hyper-parameters as the diagram writes them inside ``[...]``; "" when none."""
    a = module.__dict__
    name = type(module).__name__
    if "kernel_size" in a and "in_channels" in a:  # convolutions and transposed convolutions
        parts = [f"K={_pair(a['kernel_size'])}", f"S={_pair(a.get('stride', 1))}",
                 f"P={_pair(a.get('padding', 0))}"]
        if _pair(a.get("dilation", 1)) != "1":
            parts.append(f"D={_pair(a['dilation'])}")
        if a.get("groups", 1) != 1:
            parts.append(f"G={a['groups']}")
        return ", ".join(parts + [f"In={a['in_channels']}", f"Out={a['out_channels']}"])
    if "kernel_size" in a:  # pooling
        parts = [f"K={_pair(a['kernel_size'])}", f"S={_pair(a.get('stride') or a['kernel_size'])}"]
        if _pair(a.get("padding", 0)) != "0":
            parts.append(f"P={_pair(a['padding'])}")
        return ", ".join(parts)
    if "output_size" in a:  # adaptive pooling
        return f"Out={_pair(a['output_size'])}"
    if "in_features" in a and "out_features" in a:
        return f"{a['in_features']}, {a['out_features']}"
    if "num_embeddings" in a:
        return f"{a['num_embeddings']}, {a['embedding_dim']}"
    if "input_size" in a and "hidden_size" in a:  # recurrent layers and cells
        layers = a.get("num_layers", 1)
        extra = [f"layers={layers}"] if layers != 1 else []
        extra += ["bidirectional"] if a.get("bidirectional") else []
        return ", ".join([f"{a['input_size']}, {a['hidden_size']}", *extra])
    if "embed_dim" in a and "num_heads" in a:
        return f"D={a['embed_dim']}, heads={a['num_heads']}"
    if "num_features" in a:  # batch norm
        return str(a["num_features"])
    if "normalized_shape" in a:
        return ", ".join(str(s) for s in a["normalized_shape"])
    if "num_groups" in a and "num_channels" in a:
        return f"G={a['num_groups']}, C={a['num_channels']}"
    if "size" in a and name == "LocalResponseNorm":
        return f"size={a['size']}"
    if "scale_factor" in a and a["scale_factor"] is not None:
        return f"x{_pair(a['scale_factor'])}, {a.get('mode', '')}".rstrip(", ")
    if "p" in a and "Dropout" in name:
        return f"p={a['p']:g}"
    if "dim" in a and name in ("Softmax", "LogSoftmax"):
        return f"dim={a['dim']}" if a["dim"] is not None else ""
    return ""
