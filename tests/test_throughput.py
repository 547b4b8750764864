"""The throughput callback logs cumulative training compute: the FLOPs every batch really did."""

from cliplab.callbacks.throughput import ClipThroughputMonitor
from tests.test_module_training_step import _module, fit_three_steps


def test_flops_seen_is_flops_per_sample_times_samples_seen():
    module = _module()
    trainer = fit_three_steps(module)  # full-context batches: every batch costs the nominal FLOPs
    assert module.samples_seen == 12 and module.flops_per_sample > 0
    assert float(trainer.callback_metrics["train/flops_seen"]) == module.flops_per_sample * 12
    assert monitor(trainer).flops_seen == module.flops_per_sample * 12


def test_batches_trimmed_to_shorter_captions_count_fewer_flops():
    full, short = _module(), _module()
    full_seen = monitor(fit_three_steps(full)).flops_seen
    short_seen = monitor(fit_three_steps(short, token_length=4)).flops_seen  # as trim_padding leaves them
    assert 0 < short_seen < full_seen == full.flops_per_sample * 12


def monitor(trainer) -> ClipThroughputMonitor:
    """The callback that owns flops_seen."""
    return next(c for c in trainer.callbacks if isinstance(c, ClipThroughputMonitor))
