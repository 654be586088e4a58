"""Shared base of every pretraining method: a ``keras.Model`` that trains with ``model.fit``.

A method's ``call(inputs)`` returns a dict of tensors, and its ``compute_loss`` turns that dict into one
scalar while updating one ``keras.metrics.Mean`` per named loss term (logged as ``<term>_loss``).
Subclasses list their terms in ``loss_terms`` and call ``self.track_loss_terms({...})``.
"""

import keras

from kmedssl.distributed import metric_mean


class PretrainingMethod(keras.Model):
    """Base class: holds ``encoder`` and one Mean tracker per entry of ``loss_terms``.

    Args:
        encoder: the backbone being pretrained (a Keras model from ``kmedssl.backbones``).
    """

    loss_terms = ()

    def __init__(self, encoder, **kwargs):
        super().__init__(**kwargs)
        self.encoder = encoder
        self.loss_trackers = {term: keras.metrics.Mean(name=f"{term}_loss") for term in self.loss_terms}

    def track_loss_terms(self, terms):
        """Update the Mean tracker of every named loss term; ``terms`` maps term name -> scalar tensor (a replica's
        value; the logged one is the mean over the data-parallel replicas)."""
        for name, value in terms.items():
            self.loss_trackers[name].update_state(metric_mean(value))

    # === Config ===
    nested_objects = ("encoder",)

    def get_config(self):
        config = super().get_config()
        for key in self.nested_objects:
            config[key] = keras.saving.serialize_keras_object(getattr(self, key))
        return config

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        for key in cls.nested_objects:
            config[key] = keras.saving.deserialize_keras_object(config[key])
        return cls(**config)
