"""Silero VAD's graph rewritten so that every layer is one matrix product over the whole batch.

The published ONNX file runs its 1-D convolutions through onnxruntime's `Conv`, which multiplies one
batch item at a time, four output positions wide: at 16 kHz the STFT convolution alone makes 64 small
products for a batch of 64, and a chunk costs about 55 µs whatever the batch size. Here the same
weights are laid out for `MatMul`: the STFT frames and each convolution's taps are gathered along the
last axis (im2col, taps that only ever read padding dropped), so each layer is one product with the
batch and time folded into its rows; the recurrent cell is one product of `[x, h]` with the two
weight matrices stacked. A chunk then costs about 15 µs at 16 kHz and 9 µs at 8 kHz (batch of 64,
one core); `bench/frame_cost.py` shows the effect per call.

The computation is the model's own, step for step (reflect padding, STFT magnitude, four
convolution + ReLU blocks, an LSTM cell, a 1×1 convolution and a sigmoid), and its inputs and outputs
are the file's (`input`, `state` → `output`, `stateN`) less the `sr` scalar: one graph per rate.
`rewrite` raises `UnknownLayout` when the file is not laid out as Silero v5/v6 are, and the
caller checks the result against the original graph before using it (`SileroVAD` does, on a probe).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["UnknownLayout", "rewrite"]

_ENCODER_STRIDES = (1, 2, 2, 1)
_HIDDEN = 128


class UnknownLayout(ValueError):
    """The model file is not a Silero v5/v6 export this rewrite understands."""


def rewrite(model_path: str | Path, sample_rate: int, chunk_samples: int, context_samples: int) -> bytes:
    """The serialised batch-friendly graph for `sample_rate` (8000 or 16000), whose input rows are
    `context_samples` of the previous chunk then `chunk_samples` new ones (the STFT also pads
    `context_samples` on the right)."""
    import onnx  # only needed here, once per process and rate

    weights = _weights(onnx.load(str(model_path)), sample_rate)
    builder = _Builder()
    probability, state = builder.silero(weights, chunk_samples, context_samples)
    return builder.model(probability, state, chunk_samples + context_samples)


def _weights(model: Any, sample_rate: int) -> dict[str, np.ndarray]:
    """The named constants of the file's branch for `sample_rate` (the top-level `If` on `sr`)."""
    from onnx import numpy_helper

    ifs = [node for node in model.graph.node if node.op_type == "If"]
    if len(ifs) != 1:
        raise UnknownLayout("expected one If on the sample rate at the top of the graph")
    branch_name = "then_branch" if sample_rate == 16000 else "else_branch"
    branch = next((a.g for a in ifs[0].attribute if a.name == branch_name), None)
    if branch is None:
        raise UnknownLayout(f"the If has no {branch_name}")
    found: dict[str, np.ndarray] = {}
    for node in branch.node:
        if node.op_type != "Constant" or not node.output:
            continue
        _, _, name = node.output[0].rpartition("__")
        if name and not name.startswith("/"):
            found[name] = numpy_helper.to_array(node.attribute[0].t)
    for tensor in branch.initializer:
        found.setdefault(tensor.name.rpartition("__")[2], numpy_helper.to_array(tensor))
    needed = ["stft.forward_basis_buffer", "decoder.rnn.weight_ih", "decoder.rnn.weight_hh"]
    needed += ["decoder.rnn.bias_ih", "decoder.rnn.bias_hh", "decoder.decoder.2.weight"]
    needed += ["decoder.decoder.2.bias"]
    needed += [f"encoder.{i}.reparam_conv.{part}" for i in range(4) for part in ("weight", "bias")]
    missing = [name for name in needed if name not in found]
    if missing:
        raise UnknownLayout(f"weights not found: {', '.join(missing)}")
    return found


class _Builder:
    """Nodes and initializers of one graph; each constant gets a name of its own as it is made."""

    def __init__(self) -> None:
        self.nodes: list[Any] = []
        self.initializers: dict[str, Any] = {}

    def const(self, value: np.ndarray | list[int]) -> str:
        from onnx import numpy_helper

        array = np.ascontiguousarray(np.asarray(value, dtype=np.int64 if isinstance(value, list) else None))
        name = f"c{len(self.initializers)}"
        self.initializers[name] = numpy_helper.from_array(array, name)
        return name

    def op(self, op_type: str, *inputs: str, outputs: list[str] | None = None, **attributes: Any) -> str:
        from onnx import helper

        outputs = outputs or [f"t{len(self.nodes)}"]
        self.nodes.append(helper.make_node(op_type, list(inputs), outputs, **attributes))
        return outputs[0]

    def slice(self, tensor: str, start: int, end: int, axis: int, step: int = 1) -> str:
        return self.op(
            "Slice", tensor, self.const([start]), self.const([end]), self.const([axis]), self.const([step])
        )

    def silero(self, w: dict[str, np.ndarray], chunk: int, context: int) -> tuple[str, str]:
        basis = w["stft.forward_basis_buffer"]  # (2 × bins, 1, window): cosines then sines
        if basis.ndim != 3 or basis.shape[1] != 1 or basis.shape[0] % 2:
            raise UnknownLayout(f"unexpected STFT basis of shape {basis.shape}")
        window = basis.shape[2]
        hop = window // 2
        padded_len = chunk + 2 * context
        n_frames = (padded_len - window) // hop + 1
        if n_frames < 1:
            raise UnknownLayout(f"a {window}-sample STFT window does not fit a chunk of {chunk}")
        # Reflect-pad `context` samples on the right, then frames (batch, time, window).
        padded = self.op("Pad", "input", self.const([0, 0, 0, context]), mode="reflect")
        frames = [
            self.op("Unsqueeze", self.slice(padded, t * hop, t * hop + window, axis=1), self.const([1]))
            for t in range(n_frames)
        ]
        framed = self.op("Concat", *frames, axis=1)
        spectrum = self.op("MatMul", framed, self.const(basis[:, 0, :].T))
        bins = basis.shape[0] // 2
        real = self.slice(spectrum, 0, bins, axis=2)
        imag = self.slice(spectrum, bins, 2 * bins, axis=2)
        power = self.op("Add", self.op("Mul", real, real), self.op("Mul", imag, imag))
        features, length = self.op("Sqrt", power), n_frames
        for i, stride in enumerate(_ENCODER_STRIDES):
            features, length = self.conv_relu(
                features,
                length,
                w[f"encoder.{i}.reparam_conv.weight"],
                w[f"encoder.{i}.reparam_conv.bias"],
                stride,
            )
        if length != 1:
            raise UnknownLayout(f"the encoder leaves {length} time steps, not 1")
        x = self.op("Reshape", features, self.const([-1, _HIDDEN]))
        h_prev = self.op("Squeeze", self.slice("state", 0, 1, axis=0), self.const([0]))
        c_prev = self.op("Squeeze", self.slice("state", 1, 2, axis=0), self.const([0]))
        # LSTM cell, PyTorch's gate order (input, forget, cell, output), both products in one.
        stacked = np.concatenate([w["decoder.rnn.weight_ih"].T, w["decoder.rnn.weight_hh"].T], axis=0)
        bias = w["decoder.rnn.bias_ih"] + w["decoder.rnn.bias_hh"]
        if stacked.shape != (2 * _HIDDEN, 4 * _HIDDEN):
            raise UnknownLayout(f"unexpected LSTM weights of shape {stacked.shape}")
        gates = self.op(
            "Add",
            self.op("MatMul", self.op("Concat", x, h_prev, axis=1), self.const(stacked)),
            self.const(bias),
        )
        names = ["gate_i", "gate_f", "gate_g", "gate_o"]
        self.op("Split", gates, self.const([_HIDDEN] * 4), outputs=names, axis=1)
        gate_i, gate_f, gate_g, gate_o = names
        c = self.op(
            "Add",
            self.op("Mul", self.op("Sigmoid", gate_f), c_prev),
            self.op("Mul", self.op("Sigmoid", gate_i), self.op("Tanh", gate_g)),
        )
        h = self.op("Mul", self.op("Sigmoid", gate_o), self.op("Tanh", c))
        axis0 = self.const([0])
        state = self.op(
            "Concat",
            self.op("Unsqueeze", h, axis0),
            self.op("Unsqueeze", c, axis0),
            outputs=["stateN"],
            axis=0,
        )
        decoder_w = w["decoder.decoder.2.weight"][:, :, 0].T  # (hidden, 1)
        logit = self.op(
            "Add",
            self.op("MatMul", self.op("Relu", h), self.const(decoder_w)),
            self.const(w["decoder.decoder.2.bias"]),
        )
        return self.op("Sigmoid", logit, outputs=["output"]), state

    def conv_relu(
        self, x: str, length: int, weight: np.ndarray, bias: np.ndarray, stride: int
    ) -> tuple[str, int]:
        """Conv1d (padding 1) + ReLU on channels-last `x` (batch, length, in) as one MatMul."""
        if weight.ndim != 3:
            raise UnknownLayout(f"unexpected convolution weight of shape {weight.shape}")
        _, _, kernel = weight.shape
        pad = kernel // 2
        out_len = (length + 2 * pad - kernel) // stride + 1
        # Taps that read a real sample for some output position; the others only ever see zeros.
        taps = [k for k in range(kernel) if any(0 <= t * stride + k - pad < length for t in range(out_len))]
        padded = self.op("Pad", x, self.const([0, pad, 0, 0, pad, 0]))
        columns = [self.slice(padded, k, k + stride * (out_len - 1) + 1, axis=1, step=stride) for k in taps]
        gathered = columns[0] if len(columns) == 1 else self.op("Concat", *columns, axis=2)
        matrix = np.concatenate([weight[:, :, k].T for k in taps], axis=0)  # (taps × in, out)
        out = self.op("Add", self.op("MatMul", gathered, self.const(matrix)), self.const(bias))
        return self.op("Relu", out), out_len

    def model(self, probability: str, state: str, input_samples: int) -> bytes:
        from onnx import TensorProto, checker, helper

        graph = helper.make_graph(
            self.nodes,
            "silero_vad_batched",
            [
                helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", input_samples]),
                helper.make_tensor_value_info("state", TensorProto.FLOAT, [2, "batch", _HIDDEN]),
            ],
            [
                helper.make_tensor_value_info(probability, TensorProto.FLOAT, ["batch", 1]),
                helper.make_tensor_value_info(state, TensorProto.FLOAT, [2, "batch", _HIDDEN]),
            ],
            list(self.initializers.values()),
        )
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
        checker.check_model(model)
        serialised: bytes = model.SerializeToString()
        return serialised
