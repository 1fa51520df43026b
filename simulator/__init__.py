"""A seeded synthetic omnichannel world with known ground truth."""

from simulator.closed_loop import ClosedLoop, Outcome
from simulator.noise import MALFORMED_KINDS, malformed
from simulator.policy import LOGGING_POLICY, propensities
from simulator.run import SimulationStats, default_workers, simulate, write_ground_truth
from simulator.sinks import EventSink, FileSink, KafkaSink
from simulator.truth import (
    OfferFacts,
    conversion_probability,
    offer_facts,
    onsite_conversion_probability,
    open_probability,
)
from simulator.world import (
    MESSAGE_CHANNELS,
    PERSONAS,
    Customer,
    SimulationConfig,
    World,
    make_customer,
    make_world,
)

__all__ = [
    "LOGGING_POLICY",
    "MALFORMED_KINDS",
    "MESSAGE_CHANNELS",
    "PERSONAS",
    "ClosedLoop",
    "Customer",
    "EventSink",
    "FileSink",
    "KafkaSink",
    "OfferFacts",
    "Outcome",
    "SimulationConfig",
    "SimulationStats",
    "World",
    "conversion_probability",
    "default_workers",
    "make_customer",
    "make_world",
    "malformed",
    "offer_facts",
    "onsite_conversion_probability",
    "open_probability",
    "propensities",
    "simulate",
    "write_ground_truth",
]
