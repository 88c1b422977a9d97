"""Machine learning: the model interface and its two models, the data window, the model registry.

`ddmd_stream.ml.base` (model interface, `model_kind`, `model_for`, `load_model`) and
`ddmd_stream.ml.registry` do not import Keras/TensorFlow, so importing them stays cheap;
`cvae` (CVAE on contact maps) and `aae` (3dAAE on Cα point clouds) do and are imported lazily
by `base` when a model is built or loaded.
"""
