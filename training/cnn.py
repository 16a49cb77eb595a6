"""The two CNNs in Keras: the notebook's LeNet and a compact, stronger default.

Layers whose output is a convolution activation map are named conv1, conv2, ...; export makes each of them an
extra ONNX output. The last layer is named `logits` (no softmax: training uses from_logits).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any

import keras
import numpy as np
import numpy.typing as npt
import tensorflow as tf
from keras import layers

from training.config import CnnConfig

INPUT_SHAPE = (28, 28, 1)


def build_lenet(weight_decay: float = 5e-4) -> keras.Model:
    """conv5x5x32 -> pool -> conv5x5x64 -> pool -> dense 512 -> dropout 0.5 -> dense 10, as in the notebook."""
    l2 = keras.regularizers.l2(weight_decay) if weight_decay else None
    return keras.Sequential(
        [
            keras.Input(INPUT_SHAPE, name="image"),
            layers.Conv2D(32, 5, padding="same", activation="relu", name="conv1"),  # (28, 28, 32)
            layers.MaxPooling2D(2, name="pool1"),  # (14, 14, 32)
            layers.Conv2D(64, 5, padding="same", activation="relu", name="conv2"),  # (14, 14, 64)
            layers.MaxPooling2D(2, name="pool2"),  # (7, 7, 64)
            layers.Flatten(name="flatten"),
            layers.Dense(512, activation="relu", kernel_regularizer=l2, name="fc1"),
            layers.Dropout(0.5, name="dropout"),
            layers.Dense(10, kernel_regularizer=l2, name="logits"),
        ],
        name="lenet",
    )


def _conv_bn_relu(filters: int, size: int, name: str, padding: str = "same") -> list[layers.Layer]:
    return [
        layers.Conv2D(filters, size, padding=padding, use_bias=False, name=f"{name}_conv"),
        layers.BatchNormalization(name=f"{name}_bn"),
        layers.Activation("relu", name=name),
    ]


def build_cnn() -> keras.Model:
    """A compact network with batch norm and global pooling (~132k parameters, ~13M multiply-adds per image).

    Only the first layer works at full 28x28 resolution, with few channels: that keeps it cheap on a CPU.
    """
    return keras.Sequential(
        [
            keras.Input(INPUT_SHAPE, name="image"),
            *_conv_bn_relu(32, 5, "conv1"),  # (28, 28, 32)
            layers.MaxPooling2D(2, name="pool1"),  # (14, 14, 32)
            layers.SpatialDropout2D(0.1, name="drop1"),
            *_conv_bn_relu(64, 3, "conv2"),  # (14, 14, 64)
            *_conv_bn_relu(64, 3, "conv3"),  # (14, 14, 64)
            layers.MaxPooling2D(2, name="pool2"),  # (7, 7, 64)
            layers.SpatialDropout2D(0.1, name="drop2"),
            *_conv_bn_relu(128, 3, "conv4", padding="valid"),  # (5, 5, 128)
            layers.GlobalAveragePooling2D(name="gap"),  # (128,)
            layers.Dropout(0.3, name="dropout"),
            layers.Dense(10, name="logits"),
        ],
        name="cnn",
    )


def build_model(config: CnnConfig) -> keras.Model:
    if config.architecture == "lenet":
        return build_lenet(config.weight_decay)
    return build_cnn()


def activation_layer_names(model: keras.Model) -> list[str]:
    """Names of the layers whose outputs are convolution activation maps, in network order."""
    return [layer.name for layer in model.layers if layer.name.startswith("conv") and "_" not in layer.name]


def to_model_input(images: npt.NDArray[np.uint8]) -> npt.NDArray[np.float32]:
    """(N, 28, 28) uint8 -> (N, 28, 28, 1) float32 in [0, 1], the ONNX models' input."""
    return (images.astype(np.float32) / 255.0)[..., np.newaxis]


def _augmenter(seed: int) -> keras.Sequential:
    # Small distortions only: an MNIST digit rotated 30 degrees or shifted off-frame is a different task.
    return keras.Sequential(
        [
            layers.RandomRotation(10 / 360, fill_mode="constant", seed=seed),
            layers.RandomZoom(0.1, fill_mode="constant", seed=seed + 1),
            layers.RandomTranslation(0.1, 0.1, fill_mode="constant", seed=seed + 2),
        ],
        name="augment",
    )


def _dataset(x: npt.NDArray[np.float32], y: npt.NDArray[np.uint8], config: CnnConfig) -> tf.data.Dataset:
    ds = tf.data.Dataset.from_tensor_slices((x, np.eye(10, dtype=np.float32)[y]))  # one-hot: label smoothing
    ds = ds.shuffle(len(x), seed=config.seed, reshuffle_each_iteration=True).batch(config.batch_size)
    if config.augment:
        augment = _augmenter(config.seed)
        ds = ds.map(lambda xb, yb: (augment(xb, training=True), yb), num_parallel_calls=tf.data.AUTOTUNE)
    return ds.prefetch(tf.data.AUTOTUNE)


def _learning_rate(config: CnnConfig, steps_per_epoch: int) -> keras.optimizers.schedules.LearningRateSchedule:
    if config.lr_schedule == "cosine":
        return keras.optimizers.schedules.CosineDecay(
            config.learning_rate, decay_steps=config.epochs * steps_per_epoch, alpha=0.01
        )
    return keras.optimizers.schedules.ExponentialDecay(
        config.learning_rate, decay_steps=steps_per_epoch, decay_rate=config.lr_decay, staircase=True
    )


def _optimizer(config: CnnConfig, steps_per_epoch: int) -> keras.optimizers.Optimizer:
    schedule = _learning_rate(config, steps_per_epoch)
    if config.optimizer == "momentum":
        return keras.optimizers.SGD(schedule, momentum=config.momentum)
    return keras.optimizers.Adam(schedule)


def train_cnn(
    config: CnnConfig,
    train: tuple[npt.NDArray[np.uint8], npt.NDArray[np.uint8]],
    validation: tuple[npt.NDArray[np.uint8], npt.NDArray[np.uint8]],
    *,
    verbose: int = 2,
    log: Callable[[str], None] = print,
) -> tuple[keras.Model, dict[str, Any]]:
    """Train from scratch with fixed seeds; per-epoch loss and validation accuracy are printed and returned."""
    keras.utils.set_random_seed(config.seed)
    x_train, y_train = to_model_input(train[0]), train[1]
    x_val, y_val = to_model_input(validation[0]), np.eye(10, dtype=np.float32)[validation[1]]
    model = build_model(config)
    steps = math.ceil(len(x_train) / config.batch_size)
    model.compile(
        optimizer=_optimizer(config, steps),
        loss=keras.losses.CategoricalCrossentropy(from_logits=True, label_smoothing=config.label_smoothing),
        metrics=["accuracy"],
    )
    log(f"training {config.architecture}: {model.count_params():,} parameters, {config.epochs} epochs")
    start = time.perf_counter()
    dataset = _dataset(x_train, y_train, config)
    history = model.fit(dataset, validation_data=(x_val, y_val), epochs=config.epochs, verbose=verbose)
    seconds = time.perf_counter() - start
    return model, {"train_seconds": round(seconds, 1), "history": _rounded(history.history)}


def _rounded(history: dict[str, list[float]]) -> dict[str, list[float]]:
    return {key: [round(float(v), 5) for v in values] for key, values in history.items()}
