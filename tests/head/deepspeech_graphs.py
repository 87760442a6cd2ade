"""Random DeepSpeech v0.1.0 graphs in the official layout, frozen like Mozilla's export: BiRNN() of DeepSpeech.py at
tag v0.1.0 rebuilt with TensorFlow's own BasicLSTMCell and tf.compat.v1.nn.bidirectional_dynamic_rnn, variables
h1/b1..h6/b6 and bidirectional_rnn/{fw,bw}/basic_lstm_cell/{kernel,bias}, frozen to constants. Both loaders read
them (avatar/head/eat/deepspeech.py through TensorFlow, deepspeech_torch.py without). Used by the EAT tests (tiny)
and scripts/make_seeded_weights.py (n_hidden 2048, the real size, about 123 M parameters)."""
from __future__ import annotations

import os
from pathlib import Path

N_INPUT, N_CHARS, RELU_CLIP = 494, 29, 20.0


def _dense(tf, x, name: str, n_out: int, w_std: float, b_std: float, seed: int, clip: bool = True):
    n_in = int(x.shape[-1])
    b = tf.compat.v1.get_variable(f"b{name}", [n_out], initializer=tf.compat.v1.random_normal_initializer(
        stddev=b_std, seed=seed))
    h = tf.compat.v1.get_variable(f"h{name}", [n_in, n_out], initializer=tf.compat.v1.random_normal_initializer(
        stddev=w_std / n_in ** 0.5, seed=seed + 1))
    y = tf.add(tf.matmul(x, h), b)
    return tf.minimum(tf.nn.relu(y), RELU_CLIP) if clip else y


def build_birnn(tf, x, lengths, n_hidden: int, seed: int):
    """Official BiRNN (no dropout) on placeholders x (B,T,494), lengths (B,) -> time-major logits (T,B,29)."""
    # TF's own cell: tf.compat.v1.nn.rnn_cell.BasicLSTMCell refuses to load under Keras 3, this is the same class
    from tensorflow.python.ops.rnn_cell_impl import BasicLSTMCell

    n_cell = n_hidden
    batch = tf.shape(x)[0]
    h = tf.reshape(tf.transpose(x, [1, 0, 2]), [-1, N_INPUT])
    h = _dense(tf, h, "1", n_hidden, 12.0, 1.0, seed)  # wide enough that the clip at 20 is reached
    h = _dense(tf, h, "2", n_hidden, 0.5, 0.5, seed + 10)
    h = _dense(tf, h, "3", 2 * n_cell, 0.5, 0.5, seed + 20)
    h = tf.reshape(h, [-1, batch, 2 * n_cell])
    cells = [BasicLSTMCell(n_cell, forget_bias=1.0, state_is_tuple=True) for _ in range(2)]
    outputs, _ = tf.compat.v1.nn.bidirectional_dynamic_rnn(cells[0], cells[1], h, dtype=tf.float32, time_major=True,
                                                           sequence_length=tf.cast(lengths, tf.int64))
    h = tf.reshape(tf.concat(outputs, 2), [-1, 2 * n_cell])
    h = _dense(tf, h, "5", n_hidden, 40.0, 0.5, seed + 40)  # here too
    logits = _dense(tf, h, "6", N_CHARS, 1.0, 1.0, seed + 50, clip=False)
    return tf.reshape(logits, [-1, batch, N_CHARS], name="logits")


def _random_lstm(tf, sess, seed: int) -> None:
    """Seeded kernels (std 0.6 / sqrt(fan-in)) and biases for both cells (BasicLSTMCell's bias starts at zero: a
    random one lets the tests see it and the gate order)."""
    import numpy as np

    rng = np.random.default_rng(seed)
    for var in tf.compat.v1.global_variables():
        if "basic_lstm_cell" in var.name:
            std = 0.6 / var.shape[0] ** 0.5 if var.name.endswith("kernel:0") else 0.5
            var.load((std * rng.standard_normal(var.shape)).astype(np.float32), sess)


def write_official_deepspeech(path: Path, n_hidden: int = 16, seed: int = 0, batch: int | None = None) -> None:
    """A frozen TF1 graph in the official v0.1.0 layout with seeded random weights (n_cell = n_hidden)."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf

    graph = tf.Graph()
    with graph.as_default():
        x = tf.compat.v1.placeholder(tf.float32, [batch, None, N_INPUT], name="input_node")
        lengths = tf.compat.v1.placeholder(tf.int32, [batch], name="input_lengths")
        build_birnn(tf, x, lengths, n_hidden, seed)
        with tf.compat.v1.Session(graph=graph) as sess:
            sess.run(tf.compat.v1.global_variables_initializer())
            _random_lstm(tf, sess, seed)
            frozen = tf.compat.v1.graph_util.convert_variables_to_constants(sess, graph.as_graph_def(), ["logits"])
    Path(path).write_bytes(frozen.SerializeToString())


def random_constants(n_hidden: int = 16, seed: int = 0) -> dict:
    """The same layout as numpy arrays (no TensorFlow), for TorchDeepSpeech.from_constants on a machine without it.
    Scales as write_official_deepspeech's: the clip at 20 is reached in dense1 and dense5."""
    import numpy as np

    from avatar.head.eat.deepspeech_torch import expected_shapes

    rng = np.random.default_rng(seed)
    w_std = {"h1": 12.0, "h2": 0.5, "h3": 0.5, "h5": 40.0, "h6": 1.0}
    consts = {}
    for name, shape in expected_shapes(n_hidden, n_hidden).items():
        if name.endswith("kernel"):
            std = 0.6 / shape[0] ** 0.5
        elif name in w_std:
            std = w_std[name] / shape[0] ** 0.5
        else:
            std = 1.0 if name in ("b1", "b6") else 0.5
        consts[name] = (std * rng.standard_normal(shape)).astype(np.float32)
    return consts
