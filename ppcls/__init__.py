"""ppcls: MobileNeXt on PaddlePaddle with the PaddleClas user surface."""

__version__ = "0.1.0"
