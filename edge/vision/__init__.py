"""On-device face detection, alignment, embedding and recognition (TFLite, int8)."""
