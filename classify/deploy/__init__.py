"""Deployment, above both stages: predict (the cache's extractor, then the head), onnx_export (one
graph, image -> probabilities), onnx_predict and serve (ONNX Runtime, no torch)."""
