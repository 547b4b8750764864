"""The benchmark harness's logic on fake timings: medians, ratios, gates, interleaving, MFU, reports.
No timing is asserted here (speed is never a test)."""

import json
import math

import pytest
import torch

from bench import harness
from bench.__main__ import parse, resolve_device
from bench.harness import SIDES, Case


def fake_runner(values: dict[str, list[float]], first_loss: dict[str, float] | None = None, calls=None):
    """A runner replaying canned results per side, recording the call order."""
    counters = {side: 0 for side in SIDES}
    first_loss = first_loss or {side: 2.0 for side in SIDES}

    def run(module: str, spec: dict) -> dict:
        side = spec["side"]
        if calls is not None:
            calls.append(side)
        i = counters[side]
        counters[side] += 1
        return {"samples_per_s": values[side][i], "first_loss": first_loss[side], "warmup_s": 1.0 + i}

    return run


def case(**kw) -> Case:
    return Case(name="fake", module="unused", spec={}, flops_per_sample=1e9, peak_key="fp32", **kw)


def test_median_ignores_missing_and_nan():
    assert harness.median([3.0, 1.0, 2.0]) == 2.0
    assert harness.median([4.0, None, 1.0, float("nan"), 2.0]) == 2.0
    assert harness.median([]) is None


@pytest.mark.parametrize(
    ("ours", "theirs", "higher", "expected"),
    [(120.0, 100.0, True, 1.2), (100.0, 125.0, False, 1.25), (None, 1.0, True, None), (1.0, 0.0, True, None)],
)
def test_ratio_is_cliplab_advantage_in_either_direction(ours, theirs, higher, expected):
    got = harness.ratio(ours, theirs, higher)
    assert got == pytest.approx(expected) if expected is not None else got is None


def test_mfu_is_model_flops_over_peak():
    assert harness.mfu(2e9, 50.0, 200e9) == pytest.approx(0.5)
    assert harness.mfu(None, 50.0, 1e9) is None
    assert harness.mfu(1e9, 50.0, None) is None


def test_gate_relative_tolerance():
    assert harness.check_gate(4.0, 4.0 + 3e-5, 1e-6)[0] is False
    assert harness.check_gate(4.0, 4.0 + 3e-5, 1e-5)[0] is True
    assert harness.check_gate(float("nan"), 4.0, 1.0)[0] is False
    assert harness.check_gate(None, 4.0, 1.0)[0] is False


def test_runs_interleave_and_alternate_who_goes_first():
    calls = []
    runner = fake_runner({s: [1.0] * 4 for s in SIDES}, calls=calls)
    harness.run_case(case(), reps=4, runner=runner, log=lambda m: None)
    assert calls == ["cliplab", "open_clip", "open_clip", "cliplab"] * 2


def test_summary_takes_medians_ratio_and_mfu_with_one_flop_count():
    runner = fake_runner(
        {"cliplab": [10.0, 30.0, 20.0, 25.0, 12.0], "open_clip": [9.0, 10.0, 50.0, 8.0, 11.0]}
    )
    c = case()
    results = harness.run_case(c, reps=5, runner=runner, log=lambda m: None)
    row = harness.summarize(c, results, peaks={"fp32": 100e9})
    assert row.gate_ok and row.runs == 5
    assert row.median == {"cliplab": 20.0, "open_clip": 10.0}
    assert row.ratio == pytest.approx(2.0)
    assert row.spread["open_clip"] == (8.0, 50.0)
    # Same FLOPs per sample on both sides: the MFU ratio equals the throughput ratio.
    assert row.mfu["cliplab"] == pytest.approx(20 * 1e9 / 100e9)
    assert row.mfu["cliplab"] / row.mfu["open_clip"] == pytest.approx(row.ratio)
    assert row.warmup_s["cliplab"] == pytest.approx(3.0)


def test_failing_gate_stops_after_first_pair_and_reports_no_timing():
    calls = []
    runner = fake_runner(
        {s: [1.0] * 5 for s in SIDES}, first_loss={"cliplab": 2.0, "open_clip": 2.5}, calls=calls
    )
    c = case()
    results = harness.run_case(c, reps=5, runner=runner, log=lambda m: None)
    assert len(calls) == 2
    row = harness.summarize(c, results, peaks={"fp32": 1e9})
    assert not row.gate_ok and "rel diff" in row.gate_message
    assert row.ratio is None and row.median == {"cliplab": None, "open_clip": None}


def test_worker_error_fails_the_gate_without_crashing():
    def runner(module, spec):
        if spec["side"] == "cliplab":
            raise RuntimeError("worker died\nCUDA out of memory")
        return {"samples_per_s": 1.0, "first_loss": 1.0}

    c = case()
    results = harness.run_case(c, reps=3, runner=runner, log=lambda m: None)
    row = harness.summarize(c, results, peaks={})
    assert not row.gate_ok and "out of memory" in row.gate_message


def test_lower_is_better_metric_memory():
    runner = fake_runner({"cliplab": [100.0] * 3, "open_clip": [150.0] * 3})
    c = Case(name="mem", module="unused", spec={}, higher_is_better=False, unit="bytes")
    row = harness.summarize(c, harness.run_case(c, 3, runner, log=lambda m: None), peaks={})
    assert row.ratio == pytest.approx(1.5)
    assert row.mfu == {"cliplab": None, "open_clip": None}


def test_also_rows_read_other_metrics_of_the_same_runs():
    def runner(module, spec):
        side = spec["side"]
        return {
            "time_s": 2.0 if side == "cliplab" else 3.0,
            "peak_bytes": 100.0 if side == "cliplab" else 400.0,
            "first_loss": 1.0,
        }

    c = Case(
        name="loss",
        module="unused",
        spec={},
        metric="time_s",
        higher_is_better=False,
        unit="s",
        also=(("peak memory", "peak_bytes", "bytes"),),
    )
    calls = []
    results = harness.run_case(c, 3, lambda m, s: calls.append(s) or runner(m, s), log=lambda m: None)
    time_row, memory_row = harness.summarize_all(c, results, peaks={})
    assert len(calls) == 6  # one set of runs for both rows
    assert (time_row.case, time_row.unit, time_row.ratio) == ("loss", "s", pytest.approx(1.5))
    assert (memory_row.case, memory_row.unit) == ("loss, peak memory", "bytes")
    assert memory_row.median == {"cliplab": 100.0, "open_clip": 400.0} and memory_row.ratio == pytest.approx(
        4.0
    )
    assert memory_row.gate_ok and memory_row.mfu == {"cliplab": None, "open_clip": None}


def test_reports_written_as_markdown_and_json(tmp_path):
    runner = fake_runner({"cliplab": [11.0] * 5, "open_clip": [10.0] * 5})
    c = case()
    row = harness.summarize(c, harness.run_case(c, 5, runner, log=lambda m: None), peaks={"fp32": 50e9})
    info = harness.machine_info("cpu", 2)
    md, js = harness.write_results([row], info, {"fp32": 50e9}, {"fake": {}}, tmp_path)
    text = md.read_text()
    assert "| fake | samples/s | 11.0 | 10.0 | 1.10x | 22% | 20% |" in text
    assert "50.0 GFLOP/s" in text
    payload = json.loads(js.read_text())
    assert payload["rows"][0]["ratio"] == pytest.approx(1.1)
    assert (tmp_path / "latest.md").exists() and (tmp_path / "latest.json").exists()


def test_matmul_peak_is_positive_flops():
    peak = harness.matmul_peak(torch.float32, "cpu", n=64, reps=2)
    assert math.isfinite(peak) and peak > 0


def test_benchmarks_count_flops_as_training_does():
    # one FLOP count for the MFU of the benchmarks and of training runs (ClipThroughputMonitor)
    from bench import bench_train_step
    from cliplab.models import flops

    assert bench_train_step.train_flops_per_sample is flops.train_flops_per_sample


def test_cli_selection_and_cuda_skip(monkeypatch):
    assert parse(["train_step", "--quick"]).names == ["train_step"]
    assert parse(["loss", "data", "zeroshot"]).names == ["loss", "data", "zeroshot"]  # rows of the same table
    with pytest.raises(SystemExit):
        parse(["no_such_bench"])
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto") == "cpu"
    assert resolve_device("cuda") is None


@pytest.mark.parametrize(
    ("op", "category"),
    [
        ("aten::mm", "matmul"),
        ("aten::addmm", "matmul"),
        ("aten::_scaled_dot_product_flash_attention_for_cpu_backward", "attention"),
        ("aten::convolution_backward", "convolution"),
        ("aten::_fused_adamw_", "optimizer"),
        ("Optimizer.step#AdamW.step", "optimizer"),
        ("aten::gelu_backward", "other ops"),
        ("aten::mm_out_suffix_that_is_not_mm", "other ops"),  # exact names for aten matmuls
        ("Optimizer.zero_grad#AdamW.zero_grad", "python / framework"),
    ],
)
def test_profile_op_categories(op, category):
    from bench.op_breakdown import op_category

    assert op_category(op) == category


def test_profile_breakdown_counts_matmul_flops_per_step():
    from bench.op_breakdown import op_breakdown

    a, b = torch.randn(64, 32), torch.randn(32, 16)
    with torch.profiler.profile(with_flops=True) as prof:
        for _ in range(2):
            (a @ b).relu()
        weight = torch.zeros(3, requires_grad=True)
        weight.grad = torch.ones(3)
        torch.optim.AdamW([weight], foreach=False).step()  # plain aten ops, under Optimizer.step
    out = op_breakdown(prof, steps=2)
    assert out["matmul_flops_per_step"] == 2 * 64 * 32 * 16
    assert set(out["ms_per_step"]) == {"matmul", "other ops", "optimizer"}
    assert "aten::relu" in out["top_other_ops_ms"]
    assert not any("lerp" in op or "addcdiv" in op for op in out["top_other_ops_ms"])
    assert out["matmul_flops_per_s"] > 0


def test_op_timer_breakdown_counts_what_the_profiler_counts():
    from bench.op_breakdown import op_breakdown
    from bench.op_timer import OpTimer

    a, b, bias = torch.randn(64, 32, requires_grad=True), torch.randn(32, 16), torch.randn(16)
    weight = torch.zeros(3, requires_grad=True)
    weight.grad = torch.ones(3)
    optimizer = torch.optim.AdamW([weight], fused=True)
    timer = OpTimer()
    timer.start()
    for _ in range(2):
        torch.addmm(bias, a, b).relu().sum().backward()  # forward, and the input's gradient: two matmuls
    optimizer.step()
    timer.stop()
    assert timer.calls["aten::addmm"] == 2 and timer.calls["aten::mm"] == 2
    out = op_breakdown(timer, steps=2)
    assert out["matmul_flops_per_step"] == 2 * (2 * 64 * 32 * 16)
    assert set(out["ms_per_step"]) == {"matmul", "other ops", "optimizer"}
    assert "aten::relu" in out["top_other_ops_ms"] and "aten::threshold_backward" in out["top_other_ops_ms"]
    assert out["matmul_flops_per_s"] > 0
    torch.randn(4) @ torch.randn(4)  # stopped: nothing more is recorded
    assert "aten::dot" not in timer.calls


def test_op_timer_keeps_each_matmul_shape_and_layout_and_times_it_again_alone():
    from bench.matmul_shapes import operands, time_alone
    from bench.op_breakdown import op_breakdown
    from bench.op_timer import MatmulShape, OpTimer

    x, weight, bias = torch.randn(64, 32), torch.randn(16, 32), torch.randn(16)
    queries, keys = torch.randn(2, 8, 4), torch.randn(2, 8, 4)
    with OpTimer() as timer:
        torch.nn.functional.linear(x, weight, bias)  # addmm(bias, x, weight.T): a transposed view
        torch.bmm(queries, keys.transpose(1, 2))
    linear = MatmulShape("aten::addmm", (64, 32), (32, 16), False, True, "float32", True)
    scores = MatmulShape("aten::bmm", (2, 8, 4), (2, 4, 8), False, True, "float32", False)
    assert dict(timer.matmul_calls) == {linear: 1, scores: 1}
    assert (linear.flops(), scores.flops()) == (2 * 64 * 32 * 16, 2 * 2 * 8 * 4 * 8)
    assert linear.label() == "addmm 64x32 @ 32x16^T + bias float32"
    rows = op_breakdown(timer, steps=1)["matmul_shapes"]
    costliest_first = sorted([linear, scores], key=lambda shape: -timer.matmul_seconds[shape])
    assert [row["label"] for row in rows] == [shape.label() for shape in costliest_first]
    assert all(row["calls_per_step"] == 1 and row["flops_per_s"] > 0 for row in rows)
    # Alone: the same op, shapes and layout, from the dict a worker process sends back.
    again = MatmulShape(**rows[0]["shape"])
    args = operands(again)
    assert len(args) == (3 if again.added else 2)
    a, b = args[-2:]
    assert (tuple(a.shape), tuple(b.shape)) == (tuple(again.a), tuple(again.b))
    assert (a.stride(-1) != 1, b.stride(-1) != 1) == (again.a_transposed, again.b_transposed)
    rates = time_alone(again, reps=2, evict_bytes=1 << 20)
    assert set(rates) == {"warm", "cold"} and all(rate > 0 for rate in rates.values())


def test_loss_rows_workers_give_what_the_harness_reads(tmp_path):
    from bench import bench_loss

    (case,) = [c for c in bench_loss.cases("cpu", 1, True, str(tmp_path)) if "N=1024" in c.name]
    spec = {**case.spec, "n": 256, "reps": 1}
    out = {side: bench_loss.worker({**spec, "side": side}) for side in SIDES}
    # The gate: cliplab's chunked loss and open_clip's ClipLoss give the same value from the same features.
    assert harness.check_gate(out["cliplab"]["first_loss"], out["open_clip"]["first_loss"], case.gate_rtol)[0]
    for result in out.values():
        assert result[case.metric] > 0 and result["warmup_s"] > 0
        assert all(key in result for _, key, _ in case.also)


def test_learning_parity_sides_train_step_for_step_alike(tmp_path):
    # The learning-parity benchmark's two loops (cliplab's Trainer + CLIPModule, open_clip's CLIP + ClipLoss +
    # cosine_lr) from the same weights on the same batches give the same losses: same recipe, warm-up included.
    from bench import bench_learning as learning
    from bench.bench_train_step import make_batches, model_config, write_reference_state

    model_cfg = model_config("tiny")
    state = write_reference_state(model_cfg, str(tmp_path / "init.safetensors"))
    batches = make_batches(model_cfg, batch=8, count=4, seed=3)
    runs = {}
    for side, run in (("cliplab", learning.run_cliplab), ("open_clip", learning.run_open_clip)):
        loader = torch.utils.data.DataLoader(batches, batch_size=None)
        spec = {"steps": 4, "state_path": state, "out": str(tmp_path / f"{side}.safetensors")}
        runs[side] = run(spec, model_cfg, loader)
    ours, theirs = runs["cliplab"], runs["open_clip"]
    assert ours["lrs"] == pytest.approx(theirs["lrs"], rel=1e-9) and ours["lrs"][0] > 0
    assert ours["losses"] == pytest.approx(theirs["losses"], rel=1e-5)
    assert ours["losses"][-1] != pytest.approx(ours["losses"][0], rel=1e-3)  # it trained
    gap, _ = learning.loss_gap(ours["losses"], theirs["losses"], every=1)
    assert gap < 1e-5
    assert learning.noise(0.0, 100) > 0 and learning.noise(0.5, 100) == pytest.approx(2 * (0.5 / 100) ** 0.5)


def test_learning_parity_takes_the_fp32_recipe_on_any_host(monkeypatch):
    from bench import bench_learning as learning
    from cliplab.utils import host_precision

    monkeypatch.setattr(host_precision, "cpu_flags", lambda: {"amx_bf16"})  # a host where auto picks bf16
    cfg = learning.train_config(0)
    assert (cfg.data.batch_size, cfg.trainer.max_epochs, cfg.trainer.precision) == (128, 7, "32-true")
