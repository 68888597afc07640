"""onnxq: post-training INT8 quantization of ONNX models for TensorRT and onnxruntime."""

__version__ = "0.1.0"
