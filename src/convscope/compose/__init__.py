"""Composition: a chain of linear layers read as one convolution, and re-parameterisation.

``chain`` reads each layer as the convolution its family says it is (or why it is none),
``specs`` folds the configurations with the derivation, ``weights`` folds the weights, and
``costs`` sets the chain's counts beside the single layer's. The grammar of ``convscope
compose`` is in docs/compose.md.
"""

from ..errors import NotComposableError
from .chain import ChainLink, chain_links, parse_chain
from .costs import CostComparison, compare_cost
from .specs import Composition, compose_spec, fold_spec
from .weights import compose, fold_batchnorm, merge_branches

__all__ = [
    "ChainLink",
    "Composition",
    "CostComparison",
    "NotComposableError",
    "chain_links",
    "compare_cost",
    "compose",
    "compose_spec",
    "fold_batchnorm",
    "fold_spec",
    "merge_branches",
    "parse_chain",
]
