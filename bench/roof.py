"""This machine's limit for the model's matrix products, measured, so tokens/s can be read as a share of it.

    python bench/roof.py [--seconds 2]

A transformer layer of all-MiniLM-L6-v2 is, in FLOPs, almost all matrix
products of a [tokens x 384] activation with weights of 384 x 384 (four
attention projections), 384 x 1536 and 1536 x 384 (the feed-forward pair).
This builds one OpenVINO model of that chain (384 -> 384 -> 1536 -> 384) and
runs it the way indexing runs the real model: the CPU plugin, THROUGHPUT hint
(one stream per core), each request on its own batch of 4,096 rows. The same
chain quantized to int8 by NNCF gives the int8 roof. Achieved GFLOP/s divided
by the model's FLOPs per token gives the most tokens per second this CPU could
embed in each precision if the model were nothing but those products (for
int8, "GFLOP/s" counts integer multiply-adds the same way).

Attention's own products (scores and weighted sums, about 5% of the FLOPs at
150 tokens), softmax, layer norms and GELU are left out: the roof is a little
above what the model could reach.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np

HIDDEN, INNER, LAYERS = 384, 1536, 6
ROWS = 4096  # tokens a request: a batch of 32 texts of 128 tokens
# Matrix-product FLOPs a token costs in the whole model: per layer Q, K, V and
# the output projection (4 x h^2) and the feed-forward pair (2 x h x inner), 2 FLOPs a multiply-add.
MODEL_FLOPS_PER_TOKEN = LAYERS * 2 * (4 * HIDDEN * HIDDEN + 2 * HIDDEN * INNER)
CHAIN_FLOPS_PER_ROW = 2 * (HIDDEN * HIDDEN + 2 * HIDDEN * INNER)


def _chain():
    import openvino as ov
    import openvino.opset13 as ops

    rng = np.random.default_rng(0)
    x = ops.parameter([ROWS, HIDDEN], ov.Type.f32, name="x")
    y = x
    for rows, cols in ((HIDDEN, HIDDEN), (HIDDEN, INNER), (INNER, HIDDEN)):
        weight = ops.constant((rng.standard_normal((rows, cols)) / np.sqrt(rows)).astype(np.float32))
        y = ops.matmul(y, weight, False, False)
    return ov.Model([y], [x], "chain")


def _int8(model):
    import contextlib
    import io
    import logging

    rng = np.random.default_rng(1)
    samples = [{"x": rng.standard_normal((ROWS, HIDDEN)).astype(np.float32)} for _ in range(2)]
    with contextlib.redirect_stdout(io.StringIO()):
        import nncf

        logging.getLogger("nncf").setLevel(logging.ERROR)
        return nncf.quantize(model, nncf.Dataset(samples), subset_size=len(samples))


def _throughput(model, seconds: float) -> float:
    """FLOP/s of ``model`` on the CPU plugin's streams, each request on its own batch."""
    import openvino as ov

    compiled = ov.Core().compile_model(model, "CPU", {"PERFORMANCE_HINT": "THROUGHPUT", "INFERENCE_PRECISION_HINT": "f32"})
    requests = [compiled.create_infer_request() for _ in range(int(compiled.get_property("OPTIMAL_NUMBER_OF_INFER_REQUESTS")))]
    feed = {"x": np.random.default_rng(2).standard_normal((ROWS, HIDDEN)).astype(np.float32)}
    for request in requests:  # warm up
        request.infer(feed)
    done, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        for request in requests:
            request.start_async(feed)
        for request in requests:
            request.wait()
        done += len(requests)
    return done * ROWS * CHAIN_FLOPS_PER_ROW / (time.perf_counter() - started)


def roof(seconds: float = 2.0, precisions=("fp32", "int8")) -> dict:
    """Measured matrix-product rate in each of ``precisions`` (int8 where NNCF quantizes), and the tokens/s it allows."""
    model = _chain()
    out = {"model_flops_per_token": MODEL_FLOPS_PER_TOKEN}
    for precision in precisions:
        try:
            rate = _throughput(model if precision == "fp32" else _int8(model), seconds)
        except Exception as exc:  # noqa: BLE001 - the other precision's roof still stands
            out[f"{precision}_error"] = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            continue
        out[f"{precision}_gflops"] = round(rate / 1e9, 1)
        out[f"{precision}_roof_tokens_per_s"] = round(rate / MODEL_FLOPS_PER_TOKEN)
    return out


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=2.0, help="time spent on each precision")
    print(json.dumps(roof(parser.parse_args().seconds)))
