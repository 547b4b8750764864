"""Restores the training loader's position after Lightning restored a checkpoint.

Lightning saves each stateful loader's `state_dict()` in the checkpoint (fit_loop "combined_loader") and
loads it when it sets its data up, but a scheduler asking for `trainer.estimated_stepping_batches` in
`configure_optimizers` sets the data up before the checkpoint is restored, so the saved position would
be dropped and a resumed run would replay the epoch from its start. Called from the module's
`on_train_start` (after the restore, before the first batch): loads the saved positions and recreates
the iterator.
"""

import pytorch_lightning as pl


def restore_loader_position(trainer: pl.Trainer) -> bool:
    """True when a saved loader position was applied."""
    loop = trainer.fit_loop
    if not loop._combined_loader_states_to_load or loop._combined_loader is None:
        return False
    epoch = loop.epoch_progress.current.processed
    for loader in loop._combined_loader.flattened:
        if hasattr(loader, "next_epoch"):  # cliplab's EpochDataLoader: the epoch being resumed
            loader.next_epoch = epoch
    loop._load_combined_loader_states()
    iter(loop._data_fetcher)  # the iterator made before the restore started from the epoch's beginning
    return True
