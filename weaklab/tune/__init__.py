"""The Ray Tune adapter: the trainable (config -> one engine run, one report per epoch with
a checkpoint), the Parquet-writing callback, and the study runner that builds the Tuner."""
