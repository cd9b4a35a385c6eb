"""Deployment variants of built modules: TFLite flat buffers (:mod:`hubexport.deploy.tflite`)."""
