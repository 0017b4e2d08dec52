"""The message: task protocol v2 (and v1 decoding), serializers, compression and kombu's envelope."""

from celeriac.protocol import compression, serializers
from celeriac.protocol.codec import decode_task, encode_task
from celeriac.protocol.envelope import from_envelope, to_envelope
from celeriac.protocol.message import Message, TaskCall

__all__ = [
    "Message",
    "TaskCall",
    "compression",
    "decode_task",
    "encode_task",
    "from_envelope",
    "serializers",
    "to_envelope",
]
