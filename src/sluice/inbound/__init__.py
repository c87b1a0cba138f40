"""Other APIs in front of Sluice: client requests in a foreign format are translated to OpenAI
format, relayed like any other call, and the results translated back."""

from sluice.inbound.anthropic_routes import anthropic_routes
from sluice.inbound.responses_routes import responses_routes

__all__ = ["anthropic_routes", "responses_routes"]
