"""Shared base of every pretraining method: a ``keras.Model`` that trains with ``model.fit``.

A method's ``call(inputs)`` returns a dict of tensors. The method turns it into its named loss terms and
their total in ``compute_loss_terms``; this base class's ``compute_loss`` (the one Keras calls on every
backend) does the rest, once for every method:

- updates one ``keras.metrics.Mean`` per term, logged as ``<term>_loss`` (the mean over the data-parallel
  replicas, ``kmedssl.distributed.metric_mean``);
- returns ``kmedssl.distributed.scale_loss(total)``, the value a replica hands to its optimizer so that the
  engine's gradient reduction gives the gradient of the mean over replicas (tf.distribute sums them).

A subclass cannot skip either step: it does not override ``compute_loss`` (defining one raises TypeError
when the class is created), and the terms it returns must be exactly those it declares in ``loss_terms``.
"""

import keras

from kmedssl.backbones.flops import image_flops

from kmedssl.distributed import metric_mean, scale_loss


class PretrainingMethod(keras.Model):
    """Base class: holds ``encoder`` and one Mean tracker per entry of ``loss_terms``.

    Subclasses set ``loss_terms`` (the names of their loss terms) and implement ``compute_loss_terms``.

    Args:
        encoder: the backbone being pretrained (a Keras model from ``kmedssl.backbones``).
    """

    loss_terms = ()
    # Facts that training and the benchmarks read from the method (never from a list of method names):
    contrastive = False  # the loss contrasts each sample with the others of its batch, so a batch needs >= 2
    self_supervised = True  # learns without labels (False: a supervised baseline)
    images_per_sample = 1  # input images of one training sample (2: a study's frontal/lateral pair)

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if "compute_loss" in vars(cls):
            raise TypeError(
                f"Expected {cls.__name__} to implement compute_loss_terms(x, y, y_pred, training) -> (total, terms) "
                "and leave compute_loss to PretrainingMethod (it tracks the terms and scales the total for the "
                f"replicas). Received: a class that overrides compute_loss"
            )

    def __init__(self, encoder, **kwargs):
        super().__init__(**kwargs)
        self.encoder = encoder
        self.loss_trackers = {term: keras.metrics.Mean(name=f"{term}_loss") for term in self.loss_terms}

    # === Loss ===

    def compute_loss_terms(self, x, y, y_pred, training):
        """The method's objective: ``(total, terms)``.

        Args:
            x: the input batch (dict of tensors), as passed to ``call``.
            y: the targets (``None`` for self-supervised methods).
            y_pred: the dict returned by ``call``.
            training: whether this is a training step (per-step state such as a centre or a step counter is
                updated only then).

        Returns:
            ``total``: the scalar this replica minimises (e.g. a weighted sum of the terms), unscaled;
            ``terms``: dict mapping every name of ``loss_terms`` to its scalar value.
        """
        raise NotImplementedError(f"{type(self).__name__} must implement compute_loss_terms")

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        """Keras's loss hook: ``compute_loss_terms``, one tracker update per term, ``scale_loss(total)``."""
        total, terms = self.compute_loss_terms(x, y, y_pred, training)
        if set(terms) != set(self.loss_terms):
            raise ValueError(
                f"Expected {type(self).__name__}.compute_loss_terms to return the terms {self.loss_terms}. "
                f"Received: {tuple(terms)}"
            )
        for name, value in terms.items():
            self.loss_trackers[name].update_state(metric_mean(value))
        return scale_loss(total)

    # === Cost ===
    def encoder_work(self, image_size):
        """``(trained, frozen)``: analytic forward FLOPs per input image of the encoder work of one training
        step (``kmedssl.backbones.flops``), split into networks that get gradients and an EMA teacher. Heads
        and losses are not counted. Default: the encoder on the whole ``image_size`` image."""
        return image_flops(self.encoder, image_size), 0

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
