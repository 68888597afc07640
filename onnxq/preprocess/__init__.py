"""Float-graph preprocessing: opset upgrade, constant folding and cleanup, shape inference, BN folding.

``preprocess(model, options)`` returns a new model and notes of what was done; each pass is also
available on its own as a pure ``ModelProto -> ModelProto`` function.
"""

from onnxq.preprocess.bn_fold import fold_batchnorms
from onnxq.preprocess.cleanup import fold_constants, remove_identities
from onnxq.preprocess.opset import default_opset, upgrade_opset
from onnxq.preprocess.pipeline import PreprocessOptions, preprocess
from onnxq.preprocess.shapes import infer_shapes

__all__ = [
    "PreprocessOptions",
    "default_opset",
    "fold_batchnorms",
    "fold_constants",
    "infer_shapes",
    "preprocess",
    "remove_identities",
    "upgrade_opset",
]
