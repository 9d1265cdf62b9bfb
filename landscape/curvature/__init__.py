"""Curvature matrices as linear operators on flat parameter vectors."""

from .base import ProblemOperator, as_problem
from .hessian import Hessian
from .layout import ParamLayout
from .operator import DenseOperator, LinearOperator, as_operator

__all__ = [
           "DenseOperator",
           "Hessian",
           "LinearOperator",
           "ParamLayout",
           "ProblemOperator",
           "as_operator",
           "as_problem",
]
