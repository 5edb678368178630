"""Throughput, latency and memory of one ``oddwatch worker`` end to end."""
