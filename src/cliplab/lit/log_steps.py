"""Which training batches Lightning logs: the only ones on which the default run reads device values on the host.

On a GPU, reading a device value on the host (`.item()`, `float(tensor)`, `torch.cuda.synchronize()`) makes the
CPU wait until the GPU has run everything queued, so the queue runs dry. The default callbacks do that only on
the batches whose metrics Lightning sends to the loggers.
"""

import pytorch_lightning as pl


def is_logging_step(trainer: pl.Trainer) -> bool:
    """Whether Lightning sends this training batch's step metrics to the loggers.

    Asked from `on_train_batch_start` to `on_train_batch_end` (Lightning counts the step after those). The same
    test as Lightning's `_LoggerConnector.update_train_step_metrics`: every `trainer.log_every_n_steps` optimizer
    steps and on the step that stops training, never in the middle of gradient accumulation, every step under
    `fast_dev_run`. It reads two private Lightning members, as Lightning's own ThroughputMonitor does.
    """
    if trainer.fit_loop._should_accumulate() and trainer.lightning_module.automatic_optimization:
        return False
    return trainer._logger_connector.should_update_logs or bool(trainer.fast_dev_run)
