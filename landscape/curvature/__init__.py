"""Curvature matrices as linear operators on flat parameter vectors.

The names are imported on first use, so that :mod:`landscape.problem` can import the autodiff
primitives (:mod:`.functional`, :mod:`.layout`) without the operators built on it.
"""

from ..lazy import exports

__all__ = ["DenseOperator", "Hessian", "LinearOperator", "ParamLayout", "ProblemOperator",
           "as_operator",
           "as_problem"]
__getattr__, __dir__ = exports(__name__, {
    "ProblemOperator": "base", "as_problem": "base", "Hessian": "hessian", "ParamLayout": "layout",
    "DenseOperator": "operator", "LinearOperator": "operator", "as_operator": "operator",
})
