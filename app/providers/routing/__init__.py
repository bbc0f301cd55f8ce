"""Failover routing: several deployments per model, retries before the first byte, fallbacks, breakers."""

from toolrelay.app.providers.routing.breaker import Breaker, BreakerState
from toolrelay.app.providers.routing.deployments import Deployment, DeploymentGroup
from toolrelay.app.providers.routing.routed import RoutedProvider, classify
from toolrelay.app.providers.routing.shared import RedisBreakers
from toolrelay.app.providers.routing.state import Routing
from toolrelay.app.providers.routing.strategy import Candidate, pick

__all__ = [
    "Breaker",
    "BreakerState",
    "Candidate",
    "Deployment",
    "DeploymentGroup",
    "RedisBreakers",
    "RoutedProvider",
    "Routing",
    "classify",
    "pick",
]
