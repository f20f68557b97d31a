"""Events over MQTT that are never lost: durable outbox, publisher, Home Assistant discovery, commands."""
