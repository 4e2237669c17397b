"""The embedder's exceptions, in a module that imports nothing heavy (the CLI catches them without TensorFlow)."""


class BackboneWeightsError(RuntimeError):
    """The backbone weights could be neither found locally nor downloaded."""


class TrainingError(ValueError):
    """Training cannot start: no training image could be read."""
