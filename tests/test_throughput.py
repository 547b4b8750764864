"""The throughput callback logs cumulative training compute: the FLOPs every batch really did."""

from tests.test_module_training_step import _module, fit_three_steps


def test_flops_seen_is_flops_per_sample_times_samples_seen():
    module = _module()
    trainer = fit_three_steps(module)  # full-context batches: every batch costs the nominal FLOPs
    assert module.samples_seen == 12 and module.flops_per_sample > 0
    assert float(trainer.callback_metrics["train/flops_seen"]) == module.flops_per_sample * 12
    assert module.flops_seen == module.flops_per_sample * 12


def test_batches_trimmed_to_shorter_captions_count_fewer_flops():
    full, short = _module(), _module()
    fit_three_steps(full)
    fit_three_steps(short, token_length=4)  # as the collate's trim_padding leaves short captions
    assert 0 < short.flops_seen < full.flops_seen == full.flops_per_sample * 12
