"""Keras model builders: one module each, `build(**hyperparameters) -> keras.Model`, keys as in conf/model/."""
