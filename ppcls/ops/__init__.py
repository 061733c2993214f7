"""Our own operators, kept apart from the model definitions in ``ppcls.arch``.

``ppcls.ops.fast_cpu``: C++ CPU kernels for MobileNeXt training (depthwise 3x3, 1x1, fused
batch norm + ReLU6) that a built model is switched onto; see its docstring.
"""
