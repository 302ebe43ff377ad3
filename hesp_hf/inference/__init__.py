"""Inference outside the `Trainer`: the batch predictor behind `hesp-predict` (`prediction`), the lean and ONNX
exports (`export`) and ONNX Runtime in the model's calling convention (`onnx_runtime`)."""
