"""Monoscope: explore the features that sparse autoencoders find inside language models."""
