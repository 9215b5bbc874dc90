"""The consumer loop both handlers share: deliveries, batches, the write, failure routing, the service host."""
