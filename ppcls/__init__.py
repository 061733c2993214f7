"""ppcls: MobileNeXt on PaddlePaddle with the PaddleClas user surface."""

import warnings

# Importing paddle warns on every run that ccache is missing (it only matters when compiling
# C++ extensions); keep the tools' stderr for messages that concern the user.
warnings.filterwarnings("ignore", message="No ccache found", category=UserWarning)

__version__ = "0.1.0"
