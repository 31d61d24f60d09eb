"""A Keras model file in the old MLaaS4HEP convention: ``model(idim)`` (see keras-model.yaml).

It runs on Keras 3's torch backend (``pip install keras``; no TensorFlow). The compiled
optimiser and loss are ignored: training follows the spec's ``train:`` section. The sigmoid
of the last layer is detected, so the model is trained on probabilities.
"""

import keras


def model(idim):
    m = keras.Sequential(
        [
            keras.Input(shape=(idim,)),
            keras.layers.Dense(64, activation="relu"),
            keras.layers.Dropout(0.1),
            keras.layers.Dense(32, activation="relu"),
            keras.layers.Dense(1, activation="sigmoid"),
        ]
    )
    m.compile(loss="binary_crossentropy", optimizer="adam", metrics=["accuracy"])
    return m
