"""Prediction events and the records oddwatch derives from them."""
