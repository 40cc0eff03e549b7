"""Tests of the inference server (tiny random model, real peft adapters, no downloads)."""
