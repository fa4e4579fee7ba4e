"""ser-edge training package, installed as `ser_edge.training`.

Corpora readers, speaker-independent splits and metrics need only numpy; the model and
trainer (torch) come with the `train` extra.
"""
