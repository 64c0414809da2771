from setuptools import find_packages, setup

setup(
    name="minidl",
    version="0.1.0",
    description="A small deep-learning framework with PuzzleLib's API: NumPy and PyCUDA backends, "
                "depthwise-separable convolutions, h5py weights",
    packages=find_packages(include=["minidl", "minidl.*"]),
    package_data={"minidl.backend.cuda": ["kernels/*.cu", "kernels/*.cuh"]},
    python_requires=">=3.9",
    install_requires=["numpy>=1.22", "h5py>=3.0"],
    extras_require={
        "cuda": ["pycuda>=2022.1"],
        # compiled CPU kernels for the NumPy backend's hot ops (see minidl/backend/numpy/jit.py)
        "fast": ["numba>=0.59", "threadpoolctl>=3"],
        "test": ["pytest>=7", "scikit-learn>=1.0", "tqdm", "numba>=0.59", "threadpoolctl>=3", "onnx>=1.12",
                 "onnxruntime>=1.12", "safetensors>=0.4", "matplotlib>=3.6"],
        # training curves as PNG (minidl.handlers.History.plot; the CSV needs nothing)
        "plot": ["matplotlib>=3.6"],
        # ONNX export (minidl.onnx); onnxruntime only to check a file runs
        "onnx": ["onnx>=1.12", "onnxruntime>=1.12"],
        # weights from and to PyTorch files (minidl.interop): .pt/.pth need torch, .safetensors only this
        "safetensors": ["safetensors>=0.4"],
        "torch": ["torch>=2.4"],
        # many processes (minidl.distributed): mpi4py, and MPICH with its mpiexec (leave mpich out where a
        # system MPI is used)
        "mpi": ["mpi4py>=4.1", "mpich>=5.0"],
        "digits": ["scikit-learn>=1.0"],
        "progress": ["tqdm"],
    },
)
