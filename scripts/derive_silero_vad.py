"""Derive the fast, control-flow-free Silero VAD graphs shipped in echokit_fast/assets/.

The upstream ``silero_vad.onnx`` (v5 from the silero-vad 5.1.2 wheel, v6 from 6.2.3) is a
TorchScript export: a top-level ``If`` on ``sr`` picks the 16 kHz or the 8 kHz branch, and the
decoder is wrapped in nested ``If`` nodes (squeeze-if-size-1, LSTM state plumbing). onnxruntime
runs every subgraph through its own executor, which costs more than the convolutions themselves
at batch 1, and runs each convolution image by image in a batch. This script rebuilds each
branch as one straight graph with the *same weights* (no ``If``; every convolution a Gemm over
all rows of the batch; the LSTM steps T windows in one node):

    frames [T, N, 4, k] -> MatMul (STFT basis) -> |re, im| -> 4 x (conv k3 as Gemm + ReLU)
      -> LSTM (T steps, batch N, h/c from state) -> ReLU -> Gemm -> Sigmoid
    outputs: output [T, N], stateN [2, N, 128]

``frames`` are the 4 STFT frames (k = 256 at 16 kHz, 128 at 8 kHz, hop k/2) of each window's
``context + window`` samples right-padded by reflection, which the native core
(``native/src/vad/core.rs``) lays out; ``state`` is float32 [2, N, 128]; there is no ``sr``
(one file per rate). Needs the ``onnx`` package (a build-time tool only, not a runtime
dependency). Usage:

    python scripts/derive_silero_vad.py UPSTREAM.onnx OUT_PREFIX

writes OUT_PREFIX_16k.onnx and OUT_PREFIX_8k.onnx (deterministic: same bytes every run).
tests/test_vad.py checks the derived graphs against the upstream file.
"""

from __future__ import annotations

import sys

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


def _branch_weights(graph: onnx.GraphProto, branch: str) -> dict[str, np.ndarray]:
    node = next(n for n in graph.node if n.op_type == "If")
    sub = next(a.g for a in node.attribute if a.name == branch)
    out = {}
    for n in sub.node:
        if n.op_type == "Constant" and n.output[0].endswith(
            ("weight", "bias", "weight_ih", "weight_hh", "bias_ih", "bias_hh", "basis_buffer")
        ):
            key = n.output[0].split("__Inline_0__")[-1]
            out[key] = numpy_helper.to_array(n.attribute[0].t)
    # the decoder conv bias is an anonymous Constant feeding the last Conv
    consts = {
        n.output[0]: numpy_helper.to_array(n.attribute[0].t)
        for n in sub.node
        if n.op_type == "Constant"
    }
    last_conv = [n for n in sub.node if n.op_type == "Conv"][-1]
    out["decoder.decoder.2.bias"] = consts[last_conv.input[2]]
    return out


def _lstm_onnx_order(w: np.ndarray) -> np.ndarray:
    """PyTorch packs LSTM gates as (i, f, g, o); ONNX wants (i, o, f, c)."""
    i, f, g, o = np.split(w, 4, axis=0)
    return np.concatenate([i, o, f, g], axis=0)


def _const(name: str, value, dtype=np.int64) -> onnx.TensorProto:
    return numpy_helper.from_array(np.asarray(value, dtype), name)


def build(weights: dict[str, np.ndarray], sr: int) -> onnx.ModelProto:
    """One straight graph for one rate: T consecutive windows x N streams in one call.

    Input ``frames`` float32 [T, N, 4, k]: for each window, the 4 STFT frames (k = 256 at
    16 kHz, 128 at 8 kHz, hop k/2) of ``context + window`` right-padded by reflection, i.e.
    exactly what the upstream graph's Pad + Conv(stride k/2) reads. The native core lays them
    out (a copy), which saves onnxruntime half a dozen tiny nodes per call.
    Every convolution is a Gemm over all rows (T*N*frames), so a batch is one GEMM per layer
    instead of onnxruntime's per-image im2col loop; the LSTM runs the T steps in one node.
    Outputs ``output`` [T, N] (speech probability per window) and ``stateN`` [2, N, 128].
    """
    basis = weights["stft.forward_basis_buffer"]  # [2*bins, 1, k]
    bins = basis.shape[0] // 2
    k = basis.shape[2]
    hidden = weights["decoder.rnn.weight_hh"].shape[1]

    w = [weights[f"encoder.{i}.reparam_conv.weight"] for i in range(4)]  # [out, in, 3]
    b = [weights[f"encoder.{i}.reparam_conv.bias"] for i in range(4)]
    # im2col weights, rows ordered (tap, in_channel)
    w0 = w[0].transpose(2, 1, 0).reshape(3 * w[0].shape[1], w[0].shape[0])
    w1 = w[1].transpose(2, 1, 0).reshape(3 * w[1].shape[1], w[1].shape[0])
    # stride-2 conv over 2 frames with padding 1: only taps 1 and 2 see data
    w2 = w[2][:, :, 1:3].transpose(2, 1, 0).reshape(2 * w[2].shape[1], w[2].shape[0])
    # one frame, padding 1: only the centre tap sees data
    w3 = w[3][:, :, 1].T
    lstm_w = _lstm_onnx_order(weights["decoder.rnn.weight_ih"])[None]
    lstm_r = _lstm_onnx_order(weights["decoder.rnn.weight_hh"])[None]
    lstm_b = np.concatenate(
        [
            _lstm_onnx_order(weights["decoder.rnn.bias_ih"]),
            _lstm_onnx_order(weights["decoder.rnn.bias_hh"]),
        ]
    )[None]
    dec_w = weights["decoder.decoder.2.weight"].reshape(1, hidden).T
    dec_b = np.asarray(weights["decoder.decoder.2.bias"], np.float32).reshape(1)

    f32 = np.float32
    init = [
        _const("basis_t", basis[:, 0, :].T, f32),  # [k, 2*bins]
        _const("w0", w0, f32),
        _const("b0", b[0], f32),
        _const("w1", w1, f32),
        _const("b1", b[1], f32),
        _const("w2", w2, f32),
        _const("b2", b[2], f32),
        _const("w3", w3, f32),
        _const("b3", b[3], f32),
        _const("lstm_w", lstm_w, f32),
        _const("lstm_r", lstm_r, f32),
        _const("lstm_b", lstm_b, f32),
        _const("dec_w", dec_w, f32),
        _const("dec_b", dec_b, f32),
        _const("pad_time", [0, 1, 0, 0, 1, 0]),
        _const("taps0", [[0, 1, 2], [1, 2, 3], [2, 3, 4], [3, 4, 5]]),
        _const("taps1", [[0, 1, 2], [2, 3, 4]]),
        _const("rows_k", [-1, k]),
        _const("rows_spec", [-1, 4, 2, bins]),
        _const("rows_e0", [-1, 3 * w[0].shape[1]]),
        _const("rows_e0_t", [-1, 4, w[0].shape[0]]),
        _const("rows_e1", [-1, 3 * w[1].shape[1]]),
        _const("rows_e2", [-1, 2 * w[2].shape[1]]),
        _const("rows_h", [-1, hidden]),
        _const("hidden", [hidden]),
        _const("split11", [1, 1]),
    ]
    mk = helper.make_node
    gemm = {"alpha": 1.0, "beta": 1.0}
    nodes = [
        mk("Shape", ["frames"], ["tn"], end=2),  # [T, N]
        mk("Reshape", ["frames", "rows_k"], ["rows"]),  # [T*N*4, k]
        mk("MatMul", ["rows", "basis_t"], ["spec"]),  # [T*N*4, 2*bins]
        mk("Mul", ["spec", "spec"], ["spec2"]),
        mk("Reshape", ["spec2", "rows_spec"], ["spec2_r"]),  # [T*N, 4, 2, bins]
        mk("ReduceSum", ["spec2_r", "split11_axis"], ["pow"], keepdims=0),  # [T*N, 4, bins]
        mk("Sqrt", ["pow"], ["mag"]),
        # encoder 0: k3 s1 p1 over 4 frames
        mk("Pad", ["mag", "pad_time"], ["mag_p"]),  # [T*N, 6, bins]
        mk("Gather", ["mag_p", "taps0"], ["e0_g"], axis=1),  # [T*N, 4, 3, bins]
        mk("Reshape", ["e0_g", "rows_e0"], ["e0_col"]),
        mk("Gemm", ["e0_col", "w0", "b0"], ["e0_lin"], **gemm),
        mk("Relu", ["e0_lin"], ["e0"]),  # [T*N*4, 128]
        # encoder 1: k3 s2 p1, 4 -> 2 frames
        mk("Reshape", ["e0", "rows_e0_t"], ["e0_t"]),
        mk("Pad", ["e0_t", "pad_time"], ["e0_p"]),  # [T*N, 6, 128]
        mk("Gather", ["e0_p", "taps1"], ["e1_g"], axis=1),  # [T*N, 2, 3, 128]
        mk("Reshape", ["e1_g", "rows_e1"], ["e1_col"]),
        mk("Gemm", ["e1_col", "w1", "b1"], ["e1_lin"], **gemm),
        mk("Relu", ["e1_lin"], ["e1"]),  # [T*N*2, 64]
        # encoder 2: k3 s2 p1, 2 -> 1 frame
        mk("Reshape", ["e1", "rows_e2"], ["e1_flat"]),
        mk("Gemm", ["e1_flat", "w2", "b2"], ["e2_lin"], **gemm),
        mk("Relu", ["e2_lin"], ["e2"]),  # [T*N, 64]
        # encoder 3: k3 s1 p1 on 1 frame
        mk("Gemm", ["e2", "w3", "b3"], ["e3_lin"], **gemm),
        mk("Relu", ["e3_lin"], ["e3"]),  # [T*N, 128]
        # LSTM: T steps, batch N
        mk("Concat", ["tn", "hidden"], ["tnh"], axis=0),
        mk("Reshape", ["e3", "tnh"], ["lstm_x"]),  # [T, N, 128]
        mk("Split", ["state", "split11"], ["h0", "c0"], axis=0),
        mk(
            "LSTM",
            ["lstm_x", "lstm_w", "lstm_r", "lstm_b", "", "h0", "c0"],
            ["lstm_y", "h1", "c1"],
            hidden_size=hidden,
        ),
        mk("Concat", ["h1", "c1"], ["stateN"], axis=0),
        # decoder on every step: [T, 1, N, 128] -> [T, N]
        mk("Reshape", ["lstm_y", "rows_h"], ["y_rows"]),
        mk("Relu", ["y_rows"], ["y_relu"]),
        mk("Gemm", ["y_relu", "dec_w", "dec_b"], ["logit"], **gemm),
        mk("Sigmoid", ["logit"], ["p_rows"]),
        mk("Reshape", ["p_rows", "tn"], ["output"]),
    ]
    init.append(_const("split11_axis", [2]))
    graph = helper.make_graph(
        nodes,
        f"silero_vad_{sr // 1000}k_batched",
        [
            helper.make_tensor_value_info("frames", TensorProto.FLOAT, ["T", "N", 4, k]),
            helper.make_tensor_value_info("state", TensorProto.FLOAT, [2, "N", hidden]),
        ],
        [
            helper.make_tensor_value_info("output", TensorProto.FLOAT, ["T", "N"]),
            helper.make_tensor_value_info("stateN", TensorProto.FLOAT, [2, "N", hidden]),
        ],
        init,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 16)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def main() -> None:
    src, prefix = sys.argv[1], sys.argv[2]
    upstream = onnx.load(src)
    for branch, sr in (("then_branch", 16000), ("else_branch", 8000)):
        model = build(_branch_weights(upstream.graph, branch), sr)
        onnx.save(model, f"{prefix}_{sr // 1000}k.onnx")


if __name__ == "__main__":
    main()
