"""``mdpeer demo``: local Kafka, the reference server, three peers, a publisher, a live view
and an exactly-once check of what a read_committed consumer sees."""
