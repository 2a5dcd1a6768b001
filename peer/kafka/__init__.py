"""What mdpeer asks of Kafka's client library: what its errors mean (``errors``)."""
