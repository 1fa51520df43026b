"""Bytewax dataflows and their sources and sinks (Kafka, the file event log, the simulator)."""
