"""Puts the training loader where a resumed run must continue, after Lightning restored a checkpoint.

Lightning saves each stateful loader's `state_dict()` in the checkpoint (fit_loop "combined_loader") and
loads it when it sets its data up. Two cases go wrong without this module:
- a scheduler asking for `trainer.estimated_stepping_batches` in `configure_optimizers` sets the data up
  before the restore: the saved position is never loaded and the loader was built for epoch 0;
- a checkpoint taken at an epoch's end that was cut short (`limit_train_batches`) holds a mid-epoch
  position, which must not leak into the next epoch.
Called from the module's `on_train_start` (after the restore, before the first batch).
"""

import pytorch_lightning as pl


def restore_loader_position(trainer: pl.Trainer) -> bool:
    """True when a saved mid-epoch loader position is in effect."""
    loop = trainer.fit_loop
    if loop._combined_loader is None or not loop.restarting:
        return False
    epoch = loop.epoch_progress.current.processed
    loaders = loop._combined_loader.flattened
    pending = bool(loop._combined_loader_states_to_load)
    if loop.restarted_mid_epoch and not pending:
        return True  # Lightning set the data up after the restore: the position is already in effect
    for loader in loaders:
        if hasattr(loader, "next_epoch"):  # cliplab's EpochDataLoader: the epoch to stream next
            loader.next_epoch = epoch
    if loop.restarted_mid_epoch:
        loop._load_combined_loader_states()
    else:  # at an epoch boundary the next epoch starts from its beginning
        loop._combined_loader_states_to_load = []
        for loader in loaders:
            if hasattr(loader, "forget_position"):
                loader.forget_position()
    iter(loop._data_fetcher)  # a fresh iterator from the position (or epoch) just set
    return loop.restarted_mid_epoch
