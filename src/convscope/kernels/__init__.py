"""The array kernels the families' forward and backward passes run on: im2col for every
convolution, strided and adaptive windows for every pool. Each reads its windows from
``convscope.geometry``."""
