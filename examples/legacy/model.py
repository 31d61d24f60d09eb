"""The old MLaaS4HEP model file: ``model(idim)`` returns a compiled Keras model.

Kept as the old workflow had it; ``convert-legacy --model`` turns it into
``model: {kind: python, framework: keras, function: model}``.
"""

import keras


def model(idim):
    m = keras.Sequential(
        [
            keras.Input(shape=(idim,)),
            keras.layers.Dense(128, activation="relu"),
            keras.layers.Dense(64, activation="relu"),
            keras.layers.Dense(1, activation="sigmoid"),
        ]
    )
    m.compile(loss="binary_crossentropy", optimizer="adam", metrics=["accuracy"])
    return m
