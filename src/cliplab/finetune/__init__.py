"""Fine-tuning a pretrained CLIP on a labelled image set, and WiSE-FT weight interpolation.

`head` (the classifier started from the zero-shot classifier), `data` (the task's train / test splits),
`loop` (the fine-tuning steps), `wiseft` (weight interpolation), `report` (table, json, plot) and `run`
(`src/finetune.py`: all of it from `conf/finetune.yaml`).
"""
