"""Runtime backends: one file each (torch, onnx, fake) behind the small ``Backend`` protocol."""
