"""Coding: the rANS message, codecs as (push, pop) pairs, bits-back built from codecs, the
posteriors both ends compute, and the engine that runs a model over a sequence of images."""
