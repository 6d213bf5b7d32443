"""The process boundary: what crosses between the nodes, defined once.

* :mod:`.topics` -- every topic's default name, message type and QoS;
* :mod:`.tensors` -- numpy arrays <-> ``Tensor`` / ``uint8[]`` fields, :class:`WireError`;
* :mod:`.transition` -- :class:`~mechanic_rl_ros.control.decision.Decision` <-> ``Transition``;
* :mod:`.weights` -- ``PolicyWeights``: encoded, hashed and verified once.

Nothing here unpickles; every malformed field raises :class:`WireError` naming it.
"""
from mechanic_rl_ros.wire.tensors import WireError

__all__ = ["WireError"]
