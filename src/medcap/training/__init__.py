"""Training: ONE Accelerate loop for both tasks (engine.Trainer) and the task glue.

engine.py       Trainer: the loop (time budget, resume, non-finite guard, early stopping)
checkpoints.py  epoch checkpoints: the latest complete one, read with one-line errors
runlock.py      one training run per --out folder
losses.py       BCE, focal, asymmetric (the concept task's losses)
concepts.py     the concept task (MedCSRA): train_concepts, load_concept_config
captions.py     the caption task (BLIP): train_captioner, load_caption_config
"""
