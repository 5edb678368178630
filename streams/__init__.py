"""Streaming side of oddwatch: Faust app, agents, ClickHouse storage and the CLI."""
