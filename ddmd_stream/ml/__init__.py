"""Machine learning: the convolutional VAE on contact maps and the atomic model registry.

`ddmd_stream.ml.cvae` imports Keras/TensorFlow (slow); `ddmd_stream.ml.registry` does not,
so importing this package or the registry stays cheap. Import `cvae` lazily where needed.
"""
