from setuptools import find_packages, setup

setup(
    name="ppcls-mobilenext",
    version="0.1.0",
    description="MobileNeXt on PaddlePaddle 3.x with the PaddleClas user surface",
    packages=find_packages(include=["ppcls", "ppcls.*"]),
    package_data={"ppcls": ["configs/**/*.yaml", "utils/*.txt", "ops/fast_cpu/csrc/*.cc", "data/preprocess/csrc/*.c"]},
    include_package_data=True,
    python_requires=">=3.9",
    install_requires=["numpy", "pyyaml", "pillow", "simplejpeg", "tqdm"],
    # "ppcls", not PaddleClas's own "paddleclas" command, so both can be installed
    entry_points={"console_scripts": ["ppcls=ppcls.api.commands:console"]},
)
