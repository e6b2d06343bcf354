"""What a pooling layer keeps and loses, and why it is still used: ``windows`` holds the
per-axis structure of its windows, ``measures`` the analysis and its typed results. The text
is ``convscope.render``'s."""

from .measures import (
    PoolAnalysis,
    analyze_pool,
    following_conv_spec,
    parse_conv,
    pool_spec,
    smooth_noise,
)
from .windows import AxisWindows, axis_windows, distinct_winners, hitting_set, interval_rank

__all__ = [
    "AxisWindows",
    "PoolAnalysis",
    "analyze_pool",
    "axis_windows",
    "distinct_winners",
    "following_conv_spec",
    "hitting_set",
    "interval_rank",
    "parse_conv",
    "pool_spec",
    "smooth_noise",
]
