"""The inspector: per-layer summaries and seed-style diagrams, from one trace of the model.

Three stages with plain data between them (see ``shared/STYLE.md``):

- :func:`~nnatlas.inspect.trace.trace_model` runs the model once (on the ``meta`` device
  when it can: only shapes propagate) and returns a :class:`~nnatlas.inspect.trace.Trace`;
- :func:`~nnatlas.inspect.graph.build_graph` turns a trace into nodes and edges at a depth,
  collapsing repeated blocks and recurrent steps;
- :func:`~nnatlas.inspect.render.to_dot` and :class:`Summary` render DOT and table text.

``summary`` and ``diagram`` accept a model name, a module (with ``input=``) or a trace, so
a second view never needs a second run.
"""

from nnatlas.inspect.diagram import Diagram, GraphvizMissingError, diagram
from nnatlas.inspect.render import Style
from nnatlas.inspect.summary import Summary, summary
from nnatlas.inspect.trace import Trace, TraceError, trace_model

__all__ = ["Diagram", "GraphvizMissingError", "Style", "Summary", "Trace", "TraceError", "diagram", "summary",
           "trace_model"]
