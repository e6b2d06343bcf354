"""The errors convscope raises. Each names the rule broken and the numbers involved."""


class ConvScopeError(ValueError):
    """Base class: an invalid layer, input or argument."""


class LayerConfigError(ConvScopeError):
    """A layer's configuration breaks a rule (e.g. groups that do not divide the channels)."""


class ShapeError(ConvScopeError):
    """An input shape is invalid for a layer (e.g. a kernel larger than the padded input)."""


class NotComposableError(ConvScopeError):
    """A chain of layers that is not one convolution; the message says which layer and why."""
