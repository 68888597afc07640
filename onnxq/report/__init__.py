"""Records of what onnxq did, and their renderings (text, markdown, json)."""

