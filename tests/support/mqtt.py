"""An MQTT 5 client for tests that publish as a device would."""

from __future__ import annotations

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion


def publisher(host: str, port: int) -> mqtt.Client:
    """Connected, its network loop running in a thread of its own."""
    client = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    client.connect(host, port)
    client.loop_start()
    return client
