"""Read-only graph knowledge: the op taxonomy and queries over onnx-graphsurgeon graphs."""
