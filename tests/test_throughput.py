"""The throughput callback logs cumulative training compute: FLOPs per sample x samples seen."""

from tests.test_module_training_step import _module, fit_three_steps


def test_flops_seen_is_flops_per_sample_times_samples_seen():
    module = _module()
    trainer = fit_three_steps(module)
    assert module.samples_seen == 12 and module.flops_per_sample > 0
    assert float(trainer.callback_metrics["train/flops_seen"]) == module.flops_per_sample * 12
