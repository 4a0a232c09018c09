"""Layers nnatlas writes from scratch that mirror a ``torch.nn`` layer.

Each takes its ``torch.nn`` namesake's constructor signature, holds the same parameters
and buffers under the same names, and has ``from_reference(torch_module)`` that returns
the from-scratch layer holding the reference's weights. Where speed and clarity differ,
an ``impl`` argument picks the readable path or the fused ``torch`` kernel; both are
tested equal.
"""

from nnatlas.nn.norm import BatchNorm1d, BatchNorm2d, LocalResponseNorm, RMSNorm
from nnatlas.nn.recurrent import GRU, GRUCell, LSTM, LSTMCell, RNN, RNNCell
from nnatlas.nn.attention import MultiheadAttention, TransformerDecoderLayer, TransformerEncoderLayer
from nnatlas.nn.graph import GCNConv

__all__ = [
    "GCNConv",
    "MultiheadAttention",
    "TransformerDecoderLayer",
    "TransformerEncoderLayer",
    "BatchNorm1d",
    "BatchNorm2d",
    "LocalResponseNorm",
    "RMSNorm",
    "RNNCell",
    "LSTMCell",
    "GRUCell",
    "RNN",
    "LSTM",
    "GRU",
]
