"""Projection heads shared by the two-crop contrastive methods."""

import keras


@keras.saving.register_keras_serializable(package="kmedssl")
class ProjectionHead(keras.layers.Layer):
    """MLP projection head: Linear(hidden_dim) -> ReLU -> Linear(output_dim) (SimCLR; SupCon's "mlp" head).

    Input: (B, D) encoder features. Output: (B, output_dim) un-normalised projections (losses normalise).
    """

    def __init__(self, hidden_dim=512, output_dim=128, **kwargs):
        super().__init__(**kwargs)
        self.hidden_dim = int(hidden_dim)
        self.output_dim = int(output_dim)
        self.hidden = keras.layers.Dense(self.hidden_dim, activation="relu", name="hidden")
        self.output_projection = keras.layers.Dense(self.output_dim, name="output")

    def build(self, input_shape):
        self.hidden.build(input_shape)
        self.output_projection.build((*input_shape[:-1], self.hidden_dim))

    def call(self, features):
        return self.output_projection(self.hidden(features))

    def compute_output_shape(self, input_shape):
        return (*input_shape[:-1], self.output_dim)

    def get_config(self):
        config = super().get_config()
        config.update(hidden_dim=self.hidden_dim, output_dim=self.output_dim)
        return config
